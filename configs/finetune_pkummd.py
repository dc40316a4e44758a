r"""NTU -> PKU-MMD (phase 1, cross-subject) transfer: U-fusion localization.

  python -m skel_jax.build_data --dataset=pku_mmd/v1_xsub \
      --manual_dir=/data/pku_mmd --data_dir=data
  python -m skel_jax.main --config=configs/finetune_pkummd.py \
      --workdir=runs/pkummd --config.pretrain_workdir=runs/pretrain_ntu60_xsub
  # or from an export: --config.pretrain_workdir=exports/snipclr_ntu60
  python -m skel_jax.main --config=configs/finetune_pkummd.py:smoke \
      --workdir=/tmp/pku_smoke --config.pretrain_workdir=/tmp/pre_ntu_smoke

PKU-MMD videos are long (~5k frames at 30 fps), so training uses random
1000-frame crops (``data.train_window``) and evaluation runs whole videos,
padded to ``data.pad_length``; docs/method.md gives no PKU-MMD crop length.
Headline metric: mAP@0.5; ``--config.eval.metric=pkummd_official`` gives the
official evaluate.py definition, ``voc_inclusive`` the HiCLR/PCM3 one.
"""

from skel_jax import cli
from skel_jax import config_defaults

VARIANTS = {'smoke': 'a tiny model and a few steps (CPU check)'}


def get_config(arg=None):
  tokens = cli.parse_variant(arg, VARIANTS, 'configs/finetune_pkummd.py')
  c = config_defaults.finetune_config()
  c.data.name, c.data.config = 'pku_mmd', 'v1_xsub'
  c.data.train_split, c.data.eval_split = 'train', 'test'
  c.data.num_persons = 2
  c.data.train_window = 1000
  c.data.pad_length = 8192
  c.eval.batch_size = 8
  if 'smoke' in tokens:
    config_defaults.make_finetune_smoke(c)
    c.data.train_window = 32
    c.data.pad_length = 64
  return c
