"""Default experiment settings shared by the files in ``configs/``.

Values follow the released SnipCLR code (docs/method.md); experiment files
override
what differs (dataset, size, budget). Every field is overridable on the command
line, e.g. ``--config.pretrain.snippet_weight=0``.
"""

import ml_collections

from skel_jax import bases


def data_config(name='synthetic_skeleton', config='default', dir='data'):
  return ml_collections.ConfigDict(
    {
      'name': name,
      'config': config,
      'dir': dir,
      'build_if_missing': True,
      'pretrain_split': 'pretrain',
      'train_split': 'train',
      'eval_split': 'val',
      'preprocess': 'plain',  # plain | aimclr | aimclr_raw | agcn (input_pipeline)
      'num_persons': 1,  # M: persons per sample (padded with zeros)
      'clip_len': 128,  # pretraining window length (frames)
      'pad_length': 320,  # localization sequences are padded to this length
      'train_window': 0,  # > 0: train on random crops of this many frames
    }
  )


def model_config(width=1.0):
  return ml_collections.ConfigDict(
    {
      'backbone': {'name': 'agcn', 'width': width},
      'feature_dim': 128,  # MoCo embedding size
      # BatchNorm after the hidden layer of the projection MLPs (MoCo v3 /
      # SimCLR); the released heads have none.
      'head_batch_norm': False,
      'num_snippets': 19,  # S, dense snippets per clip
      'taps': (1, 7, 10),  # backbone units fused by the U-shaped module
      'head': 'ufusion',  # 'ufusion' | 'upsample' (baseline)
      'head_dim': 512,
      'num_classes': 0,  # localization classes; 0 = from the dataset
    }
  )


def checkpoint_config():
  return ml_collections.ConfigDict(
    {'save_interval_steps': 1000, 'max_to_keep': 3}
  )


def run_config(stage, seed):
  """Fields every training stage shares."""
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.seed = seed
  c.num_devices = 0  # data-parallel devices; 0 = all
  c.fsdp = 1  # size of the parameter-sharding mesh axis; 1 = pure data parallel
  c.nonfinite = (
    'stop'  # on a NaN/inf loss: 'stop' (keep last good ckpt) | 'skip'
  )
  return c


def pretrain_config():
  c = run_config('pretrain', seed=0)
  c.data = data_config()
  c.model = model_config()
  c.pretrain = {
    'base': 'skeletonclr',  # a name of skel_jax.bases.REGISTRY
    'momentum': 0.999,
    'temperature': 0.07,
    'queue_size': 32768,
    'snippet_queue_size': 32768,
    'snippet_weight': 1.5,  # lambda; 0 = video-level MoCo baseline
    'negatives': 'queue',  # 'queue' (MoCo) | 'in_batch' (global batch, no queue)
    # Snippet positives: 'argmax' of the pooled features (the release) or
    # 'geometry' (the key snippet showing the same frames).
    'snippet_positive': 'argmax',
    # Snippet negatives: 'video_mean' (one mean per video, the release) or
    # 'snippets' (every snippet of other videos, same positions included).
    'snippet_negatives': 'video_mean',
    # Nearest-neighbour positive mining from the epoch after ``mining_epoch``
    # (the release's ``epoch <= mining_epoch`` test); -1 = never.
    'mining_epoch': -1,
    'mining_topk': 1,  # global positives added per query view
    'snippet_mining_topk': 5,  # snippet positives added from queue 2
    'tempo_ratio': 2,  # RVTCLR: fast view takes every 2nd frame
    'tempo_margin': 1.0,  # RVTCLR: margin of the tempo ranking loss
    'compute_dtype': 'float32',  # or 'bfloat16' (params stay float32)
  }
  c.augment = {
    'crop_padding_ratio': 6,
    'shear_amplitude': 0.5,
    'query_strong': True,  # query adds noise/blur/axis mask (released config)
    'noise_std': 0.01,
    'noise_prob': 0.5,
    'blur_kernel': 15,
    'blur_sigma': (0.1, 2.0),
    'blur_prob': 0.5,
    'blur_normalize': True,  # False = AimCLR's unnormalised kernel (a bug)
    'axis_mask_prob': 0.5,
    # AimCLR's extreme view only:
    'spatial_flip_prob': 0.5,
    'rotate_degrees': 30.0,
    'time_flip_prob': 0.5,
  }
  c.optimizer = {
    'name': 'sgd',
    'lr': 0.1,
    'momentum': 0.9,
    'weight_decay': 1e-4,
    'grad_clip_norm': 0.0,
  }
  c.batch_size = 128
  c.num_epochs = 600
  c.num_steps = 0  # > 0 overrides num_epochs
  c.warmup_epochs = 10.0
  c.lr_decay_epochs = (550,)
  c.log_every = 50
  c.checkpoint = checkpoint_config()
  # Frozen-feature probe at the end of the run (skel_jax.probe): needs a
  # dataset with frame labels (train_split / eval_split of ``data``).
  c.probe = {'enabled': False, 'limit': 0}  # limit > 0: sequences per split
  return c


def set_base(c, base, release_schedule=False):
  """Switches a pretraining config to ``base`` with that release's settings
  (``Base.release``; its epoch budget too when ``release_schedule``)."""
  b = bases.get(base).release
  c.pretrain.base = base
  c.pretrain.mining_epoch = b['mining_epoch']
  c.augment.query_strong = b['query_strong']
  if release_schedule:
    c.num_epochs, c.lr_decay_epochs = b['num_epochs'], b['lr_decay_epochs']
  return c


# ``--config=configs/pretrain_*.py:TOKENS``: the tokens of every pretraining
# config, parsed by ``cli.parse_variant(arg, PRETRAIN_VARIANTS, FILE,
# exclusive=PRETRAIN_EXCLUSIVE)`` and applied by ``pretrain_variant``.
PRETRAIN_VARIANTS = {
  **{
    name: f'base method {b.title}' + ' (the default)' * (name == 'skeletonclr')
    for name, b in bases.REGISTRY.items()
  },
  'video': 'no snippet loss: the base alone (video-level MoCo)',
  'release': 'released snippet contrast: argmax positives, video-mean negatives',
  'stgcn': 'ST-GCN backbone instead of AGCN',
  'smoke': 'a seconds-long CPU run',
}
PRETRAIN_EXCLUSIVE = (tuple(bases.REGISTRY),)  # at most one base


def pretrain_variant(c, tokens, smoke, release_schedule=False):
  """Applies parsed ``--config=FILE:TOKENS`` variant tokens to a pretraining
  config.

  Tokens (``PRETRAIN_VARIANTS``, any order): a base (skeletonclr | aimclr |
  rvtclr), ``video`` (no snippet loss: the base alone), ``release`` (the
  released snippet contrast: argmax positives, per-video mean negatives),
  ``stgcn`` (ST-GCN backbone instead of AGCN), ``smoke`` (``smoke(c)``: a
  seconds-long CPU run).
  """
  if isinstance(tokens, str):
    raise TypeError(
      'pretrain_variant takes the tokens cli.parse_variant returns, not '
      f'the raw variant string {tokens!r}'
    )
  base = next((t for t in tokens if t in bases.REGISTRY), 'skeletonclr')
  set_base(c, base, release_schedule)
  if 'video' in tokens:
    c.pretrain.snippet_weight = 0.0
  if 'release' in tokens:
    set_release_snippet(c)
  if 'stgcn' in tokens:
    c.model.backbone.name = 'stgcn'
  if 'smoke' in tokens:
    smoke(c)
    # The query/key views keep the smoke clip's frames (RVTCLR's tempo views
    # keep 1 / tempo_ratio of the clip): T' >= S snippets.
    view = bases.get(base).view_frames(c.data.clip_len, c.pretrain)
    c.data.clip_len = c.data.clip_len * c.data.clip_len // view
  return c


def set_release_snippet(c):
  """The released snippet contrast (docs/method.md section 3), which a position
  code solves (docs/method.md): argmax positives, per-video mean negatives."""
  c.pretrain.snippet_positive = 'argmax'
  c.pretrain.snippet_negatives = 'video_mean'
  c.pretrain.snippet_queue_size = c.pretrain.queue_size
  return c


def eval_config():
  return ml_collections.ConfigDict(
    {
      'batch_size': 8,
      'decoder': 'outer_inner',
      'thresholds': (0.03, 0.035, 0.04, 0.045, 0.05),
      'min_length': 3,
      'outer_ratio': 0.25,
      'outer_weight': 0.6,
      'nms_threshold': 0.2,
      'line_quirks': False,  # outer_inner: the release's off-by-ones
      'smooth_kernel': 10,  # jhang: mean-filter half-width
      'activity_threshold': 0.4,  # jhang: keep frames with 1 - p_bg >= this
      'metric': 'exact',
      'iou_thresholds': (0.1, 0.2, 0.3, 0.4, 0.5),
      'num_plot_sequences': 4,
      'animate': True,  # skeleton.gif of the first eval sequence
    }
  )


def finetune_config():
  c = run_config('finetune', seed=5)
  # 'finetune' | 'linear' (classifier only, as released) | 'linear_fusion'
  # (fusion module + classifier) | 'knn'; see skel_jax.finetune.
  c.protocol = 'finetune'
  c.init = 'pretrained'  # 'pretrained' | 'random'
  c.init_seed = -1  # >= 0: initial weights from this seed, not seed
  c.pretrain_workdir = ''
  c.label_fraction = 1.0
  c.data = data_config()
  c.model = model_config()
  c.optimizer = {
    'name': 'adam',
    'lr': 1e-4,
    'weight_decay': 1e-4,
    'grad_clip_norm': 0.0,
  }
  c.batch_size = 8
  c.num_epochs = 40
  c.num_steps = 0
  c.warmup_epochs = 10.0
  c.lr_decay_epochs = (30, 35)
  c.log_every = 10
  c.checkpoint = checkpoint_config()
  c.eval = eval_config()
  c.knn = {
    'k': 20,
    'temperature': 0.07,
    'max_bank_frames': 100_000,
    'chunk': 4096,
  }  # protocol='knn' (no training)
  return c


# ---------------------------------------------------------------------------
# ':smoke' variants: the same pipeline at a size that runs in seconds on CPU.
# ---------------------------------------------------------------------------
def make_pretrain_smoke(c, steps=10):
  c.model.backbone.width = 0.125
  c.model.num_snippets = 8
  c.data.clip_len = 64
  c.pretrain.queue_size = 64
  c.pretrain.snippet_queue_size = 64
  c.batch_size = 16
  c.num_epochs = 0
  c.num_steps = steps
  c.warmup_epochs = 0.0
  c.lr_decay_epochs = ()
  c.log_every = 5
  c.checkpoint.save_interval_steps = 10
  return c


def make_finetune_smoke(c, steps=4):
  c.model.backbone.width = 0.125
  c.model.num_snippets = 8
  c.model.head_dim = 64
  c.num_epochs = 0
  c.num_steps = steps
  c.warmup_epochs = 0.0
  c.lr_decay_epochs = ()
  c.log_every = 2
  return c
