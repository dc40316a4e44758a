r"""Frame-level localization with the U-shaped fusion head on the synthetic benchmark.

  python -m skel_jax.main --config=configs/finetune_synthetic.py \
      --workdir=runs/finetune_synthetic \
      --config.pretrain_workdir=runs/pretrain_synthetic
  python -m skel_jax.main --config=configs/finetune_synthetic.py:smoke \
      --workdir=/tmp/ft_smoke --config.pretrain_workdir=/tmp/pre_smoke

Linear probe: ``--config.protocol=linear``; random init: ``--config.init=random``;
20% labels: ``--config.label_fraction=0.2``; baseline head:
``--config.model.head=upsample --config.optimizer.lr=1e-3``.
"""

from skel_jax import cli
from skel_jax import config_defaults

VARIANTS = {'smoke': 'a tiny model and a few steps (CPU check)'}


def get_config(arg=None):
  tokens = cli.parse_variant(arg, VARIANTS, 'configs/finetune_synthetic.py')
  c = config_defaults.finetune_config()
  c.model.backbone.width = 0.125
  c.model.num_snippets = 8
  c.model.head_dim = 64
  c.data.pad_length = 320
  c.optimizer.lr = 1e-3
  c.num_epochs = 40
  c.warmup_epochs = 2
  c.lr_decay_epochs = (30, 35)
  if 'smoke' in tokens:
    config_defaults.make_finetune_smoke(c, steps=12)
    c.data.config = 'smoke'
    c.data.pad_length = 128
    c.log_every = 4
    c.checkpoint.save_interval_steps = 6
  return c
