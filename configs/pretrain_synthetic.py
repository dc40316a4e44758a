r"""Snippet-MoCo pretraining on the synthetic skeleton benchmark.

  python -m skel_jax.main --config=configs/pretrain_synthetic.py \
      --workdir=runs/pretrain_synthetic
  python -m skel_jax.main --config=configs/pretrain_synthetic.py:smoke \
      --workdir=/tmp/pre_smoke          # < 1 min on a laptop CPU

Variant tokens (``config_defaults.pretrain_variant``), e.g. ``:aimclr,stgcn``
or ``:rvtclr,video,smoke``: the base method ``skeletonclr`` (default) |
``aimclr`` | ``rvtclr``, ``video`` (no snippet loss: the base alone, i.e. the
video-level baseline), ``stgcn`` (ST-GCN backbone), ``smoke``. Bases that
mine start half-way through this short budget (after epoch 1 in smoke runs).
The full-size AGCN is ``--config.model.backbone.width=1``.
"""
from skel_jax import config_defaults


def get_config(arg=None):
  c = config_defaults.pretrain_config()
  c.model.backbone.width = 0.125
  # 64-frame windows (~2 s) -> T' = 8 backbone steps -> 8 snippets of 8 frames.
  c.model.num_snippets = 8
  c.data.clip_len = 64
  # The released m = 0.999 suits ~1e5 steps; over a few hundred steps the key
  # encoder would stay ~90% its random init (0.999^120 = 0.89), so the
  # CPU-budget runs use MoCo's other standard value.
  c.pretrain.momentum = 0.99
  c.pretrain.queue_size = 4096
  c.pretrain.snippet_queue_size = 4096
  c.batch_size = 64
  c.num_epochs = 30
  c.warmup_epochs = 1.0
  c.lr_decay_epochs = (25,)
  c.log_every = 10
  c.checkpoint.save_interval_steps = 100
  c = config_defaults.pretrain_variant(c, arg, _smoke)
  if c.pretrain.base == 'rvtclr':
    c.data.clip_len = 128  # 64-frame tempo views -> T' = 8 = S
  if c.pretrain.mining_epoch >= 0:
    # Mining from half-way (AimCLR: epoch 150 of 300); after epoch 1 in smoke.
    c.pretrain.mining_epoch = 0 if c.num_steps else c.num_epochs // 2
  return c


def _smoke(c):
  # 40 steps, saved every 10: room for the kill/resume tests.
  config_defaults.make_pretrain_smoke(c, steps=40)
  c.data.config = 'smoke'
  c.pretrain.queue_size = 256
  c.pretrain.snippet_queue_size = 256
  c.warmup_epochs = 0.5
