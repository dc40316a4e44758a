r"""Snippet pretraining on NTU RGB+D 60 cross-subject, released settings.

  python -m skel_jax.build_data --dataset=ntu_rgbd/ntu60_xsub \
      --manual_dir=/data/nturgb+d_skeletons --data_dir=data
  python -m skel_jax.main --config=configs/pretrain_ntu60_xsub.py:rvtclr \
      --workdir=runs/pretrain_ntu60_xsub_rvtclr
  python -m skel_jax.main --config=configs/pretrain_ntu60_xsub.py:aimclr,smoke \
      --workdir=/tmp/pre_ntu_smoke       # tiny model, few steps (CPU check)

Variant tokens (``config_defaults.PRETRAIN_VARIANTS``): the base method
``skeletonclr`` (default) | ``aimclr`` | ``rvtclr``, ``video`` to drop the
snippet loss (the base alone), ``stgcn`` for the ST-GCN backbone, ``smoke``.
Each base runs its release's schedule: SkeletonCLR and RVTCLR (the SnipCLR
example) 600 epochs with x0.1 at 550, AimCLR 300 with x0.1 at 250; mining
from epoch 200 (RVTCLR) / 150 (AimCLR).

Data: the standard 300-frame, 2-body arrays (AimCLR ``ntu_gendata``, family A1,
without frame50; docs/method.md §7). Full AGCN, S = 19 snippets (of the
38 backbone steps of a 300-frame clip, or the 19 of RVTCLR's 150-frame tempo
views), queues of 32768, SGD lr 0.1 batch 128. docs/method.md gives no warm-up
length: 10 epochs here.
"""

from skel_jax import cli
from skel_jax import config_defaults

VARIANTS = config_defaults.PRETRAIN_VARIANTS


def get_config(arg=None):
  tokens = cli.parse_variant(
    arg,
    VARIANTS,
    'configs/pretrain_ntu60_xsub.py',
    exclusive=config_defaults.PRETRAIN_EXCLUSIVE,
  )
  c = config_defaults.pretrain_config()
  c.data.name, c.data.config = 'ntu_rgbd', 'ntu60_xsub'
  c.data.pretrain_split = 'train'
  c.data.preprocess = 'aimclr_raw'
  c.data.num_persons = 2
  c.data.clip_len = 300
  return config_defaults.pretrain_variant(
    c, tokens, config_defaults.make_pretrain_smoke, release_schedule=True
  )
