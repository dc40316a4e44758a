r"""BABEL temporal action localization on subset 1, 2 or 3 (docs/method.md §7).

  python -m skel_jax.build_data --dataset=babel/subset1 --manual_dir=/data/babel \
      --data_dir=data --builder_option=smplh_model=/models/SMPLH_male.pkl
  python -m skel_jax.main --config=configs/finetune_babel.py:subset1 \
      --workdir=runs/babel1 --config.pretrain_workdir=runs/pre_babel
  # semi-supervised, 20% of the labeled training sequences:
  #   --config.label_fraction=0.2
  python -m skel_jax.main --config=configs/finetune_babel.py:subset1,smoke \
      --workdir=/tmp/babel_smoke --config.pretrain_workdir=/tmp/pb

Whole sequences (<= 1000 frames after the builder's filter) padded to 1000,
batch 8, released finetune settings; mAP at IoU 0.1..0.5 and their mean.
"""

from skel_jax import cli
from skel_jax import config_defaults

VARIANTS = {
  'subset1': 'BABEL subset 1 (the default)',
  'subset2': 'BABEL subset 2',
  'subset3': 'BABEL subset 3',
  'smoke': 'a tiny model and a few steps (CPU check)',
}


def get_config(arg=None):
  parts = cli.parse_variant(
    arg,
    VARIANTS,
    'configs/finetune_babel.py',
    exclusive=(('subset1', 'subset2', 'subset3'),),
  )
  if not any(p.startswith('subset') for p in parts):
    parts.insert(0, 'subset1')
  subsets = [p for p in parts if p.startswith('subset')]
  c = config_defaults.finetune_config()
  c.data.name = 'babel'
  c.data.config = subsets[0] if subsets else 'subset1'
  c.data.train_split, c.data.eval_split = 'train', 'val'
  c.data.num_persons = 1
  c.data.pad_length = 1000
  if 'smoke' in parts:
    config_defaults.make_finetune_smoke(c)
    c.data.pad_length = 256
  return c
