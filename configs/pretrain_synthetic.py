r"""Snippet-MoCo pretraining on the synthetic skeleton benchmark.

  python -m skel_jax.main --config=configs/pretrain_synthetic.py \
      --workdir=runs/pretrain_synthetic
  python -m skel_jax.main --config=configs/pretrain_synthetic.py:smoke \
      --workdir=/tmp/pre_smoke          # < 1 min on a laptop CPU

Variant tokens (``config_defaults.PRETRAIN_VARIANTS``), e.g. ``:aimclr,stgcn``
or ``:rvtclr,video,smoke``: the base method ``skeletonclr`` (default) |
``aimclr`` | ``rvtclr``, ``video`` (no snippet loss: the base alone, i.e. the
video-level baseline), ``release`` (the released snippet contrast, which a
position code solves; see docs/method.md), ``stgcn`` (ST-GCN backbone),
``smoke``. Bases that mine start half-way through this short budget (after
epoch 1 in smoke runs). The full-size AGCN is
``--config.model.backbone.width=1``.

Settings that learn on this 800-sequence split (docs/method.md, "Settings
that learn"): a global queue of 512 keys (less than one epoch, so it never
holds a second crop of the query's own video), temperature 0.2, BatchNorm in
the projection heads, a 5-epoch warm-up, and the position-proof snippet contrast
(content-correct positives, every snippet of other videos as negatives).
"""

from skel_jax import cli
from skel_jax import config_defaults

VARIANTS = config_defaults.PRETRAIN_VARIANTS


def get_config(arg=None):
  tokens = cli.parse_variant(
    arg,
    VARIANTS,
    'configs/pretrain_synthetic.py',
    exclusive=config_defaults.PRETRAIN_EXCLUSIVE,
  )
  c = config_defaults.pretrain_config()
  c.model.backbone.width = 0.125
  # 64-frame windows (~2 s) -> T' = 8 backbone steps -> 8 snippets of 8 frames.
  c.model.num_snippets = 8
  c.data.clip_len = 64
  # The released m = 0.999 suits ~1e5 steps; over a few hundred steps the key
  # encoder would stay ~90% its random init (0.999^120 = 0.89), so the
  # CPU-budget runs use MoCo's other standard value.
  c.pretrain.momentum = 0.99
  # 512 < 800 sequences: the queue never holds another crop of the query's
  # own video (4096 held ~5 crops of each video, so the global loss rose).
  c.pretrain.queue_size = 512
  # Position-proof snippet contrast: 8 steps x 64 videos x 8 snippets.
  c.pretrain.snippet_positive = 'geometry'
  c.pretrain.snippet_negatives = 'snippets'
  c.pretrain.snippet_queue_size = 4096
  # Without BN in the heads every clip embeds to nearly the same vector at
  # initialisation (uniformity ~0) and at 0.07 the global loss never falls.
  c.model.head_batch_norm = True
  c.pretrain.temperature = 0.2
  c.batch_size = 64
  c.num_epochs = 30
  # 5 warm-up epochs (62 steps): after 1 the global loss rose for the first
  # ~40 steps and ended above its first full-queue value at 150 steps; after
  # 5 it falls (docs/method.md, "Settings that learn").
  c.warmup_epochs = 5.0
  c.lr_decay_epochs = (25,)
  c.log_every = 10
  c.checkpoint.save_interval_steps = 100
  c.probe.enabled = True  # frozen-feature probe at the end (skel_jax.probe)
  c = config_defaults.pretrain_variant(c, tokens, _smoke)
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
  c.pretrain.queue_size = 48  # < the 64 smoke sequences
  c.pretrain.snippet_queue_size = 256
  c.warmup_epochs = 0.5
  c.probe.limit = 8
