#!/usr/bin/env bash
# GPU numbers for the README/closing note: the benchmark at the released
# sizes (width 1, batch 128, 300-frame 2-person clips) per method and
# backbone, bf16 rows, and a step-time breakdown. Writes to ${OUT:-runs/gpu}.
#   bash scripts/gpu_bench.sh          # ~8 min on one H100/H200
# A GPU image with jax/optax/orbax but without our other packages takes them
# from a .whl/ folder (git-ignored): pip download --no-deps --python-version
# 3.12 --only-binary=:all: of ml_collections grain array_record portpicker
# flax tensorflow_datasets dm-tree immutabledict simple_parsing
# tensorflow-metadata termcolor toml docstring_parser googleapis-common-protos
# (the versions in .venv), plus the pure-Python 'promise' package copied into
# .whl/pysite/ (it has no wheel).
set -uo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then  # packages the GPU image lacks, carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/.whl/pysite:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
FULL="--batch=128 --clip_len=300 --persons=2 --width=1 --repeats=3 --steps=5 --warmup=2"
timeout 240 python3 -m skel_jax.bench $FULL --backbones=agcn \
  --methods=skeletonclr,skeletonclr+snippet,aimclr+snippet,rvtclr+snippet \
  --sections=pretrain,finetune,inference --out="$OUT/agcn.json" 2>&1 | grep -v "^W\|^I " | tee "$OUT/agcn.txt"
timeout 150 python3 -m skel_jax.bench $FULL --backbones=stgcn \
  --methods=skeletonclr+snippet,aimclr+snippet,rvtclr+snippet \
  --sections=pretrain,inference --out="$OUT/stgcn.json" 2>&1 | grep -v "^W\|^I " | tee "$OUT/stgcn.txt"
timeout 90 python3 -m skel_jax.bench $FULL --backbones=agcn --dtype=bfloat16 \
  --methods=skeletonclr+snippet,rvtclr+snippet --sections=pretrain \
  --out="$OUT/agcn_bf16.json" 2>&1 | grep -v "^W\|^I " | tee "$OUT/agcn_bf16.txt"
for dt in float32 bfloat16; do
  timeout 60 python3 scripts/profile_step.py --base=skeletonclr --snippet \
    --dtype=$dt --out="$OUT/profile_$dt.json" 2>&1 | grep -v "^W\|^I " | tee -a "$OUT/profile.txt"
done
