r"""Snippet pretraining on the whole BABEL train split (docs/method.md §7).

  python -m skel_jax.build_data --dataset=babel/full --manual_dir=/data/babel \
      --data_dir=data --builder_option=smplh_model=/models/SMPLH_male.pkl
  python -m skel_jax.main --config=configs/pretrain_babel.py:rvtclr \
      --workdir=runs/pre_babel_rvtclr
  python -m skel_jax.main --config=configs/pretrain_babel.py:smoke --workdir=/tmp/pb

Variant tokens as in ``pretrain_ntu60_xsub.py``: a base (``skeletonclr``
default, ``aimclr``, ``rvtclr``; each with its release's schedule),
``video`` (no snippet loss), ``stgcn``, ``smoke``. The released SnipCLR
BABEL example is ``:rvtclr``.

One person, NTU-25 joints from SMPL-H forward kinematics at 30 fps, plain
normalisation per window. The paper does not give the BABEL window length:
300-frame windows (10 s) like NTU, with the released optimiser settings.
"""

from skel_jax import cli
from skel_jax import config_defaults

VARIANTS = config_defaults.PRETRAIN_VARIANTS


def get_config(arg=None):
  tokens = cli.parse_variant(
    arg,
    VARIANTS,
    'configs/pretrain_babel.py',
    exclusive=config_defaults.PRETRAIN_EXCLUSIVE,
  )
  c = config_defaults.pretrain_config()
  c.data.name, c.data.config = 'babel', 'full'
  c.data.pretrain_split = 'train'
  c.data.preprocess = 'plain'
  c.data.num_persons = 1
  c.data.clip_len = 300
  return config_defaults.pretrain_variant(
    c, tokens, config_defaults.make_pretrain_smoke, release_schedule=True
  )
