r"""Snippet-MoCo pretraining on NTU RGB+D 60 cross-subject, released settings.

  python -m skel_jax.build_data --dataset=ntu_rgbd/ntu60_xsub \
      --manual_dir=/data/nturgb+d_skeletons --data_dir=data
  python -m skel_jax.main --config=configs/pretrain_ntu60_xsub.py \
      --workdir=runs/pretrain_ntu60_xsub
  python -m skel_jax.main --config=configs/pretrain_ntu60_xsub.py:smoke \
      --workdir=/tmp/pre_ntu_smoke       # tiny model, few steps (CPU check)

Data: the standard 300-frame, 2-body arrays (AimCLR ``ntu_gendata``, family A1,
without the frame50 step; METHOD.md §7). Full AGCN, S = 19 snippets of the
T/8 = 38 backbone steps, queues of 32768, SGD lr 0.1 batch 128, 600 epochs,
x0.1 at 550. METHOD.md gives no warm-up length: 10 epochs here.
Video-level baseline: ``--config.pretrain.snippet_weight=0``.
"""
from skel_jax import config_defaults


def get_config(arg=None):
  c = config_defaults.pretrain_config()
  c.data.name, c.data.config = 'ntu_rgbd', 'ntu60_xsub'
  c.data.pretrain_split = 'train'
  c.data.preprocess = 'aimclr_raw'
  c.data.num_persons = 2
  c.data.clip_len = 300
  if arg == 'smoke':
    config_defaults.make_pretrain_smoke(c)
  elif arg:
    raise ValueError(f'unknown variant {arg!r}; expected smoke or none')
  return c
