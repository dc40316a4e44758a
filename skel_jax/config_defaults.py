"""Default experiment settings shared by the files in ``configs/``.

Values follow the released SnipCLR code (METHOD.md); experiment files override
what differs (dataset, size, budget). Every field is overridable on the command
line, e.g. ``--config.pretrain.snippet_weight=0``.
"""
import ml_collections


def data_config(name='synthetic_skeleton', config='default', dir='data'):
  return ml_collections.ConfigDict({
      'name': name, 'config': config, 'dir': dir, 'build_if_missing': True,
      'pretrain_split': 'pretrain', 'train_split': 'train',
      'eval_split': 'val',
      'preprocess': 'plain',  # plain | aimclr | aimclr_raw | agcn (input_pipeline)
      'num_persons': 1,     # M: persons per sample (padded with zeros)
      'clip_len': 128,      # pretraining window length (frames)
      'pad_length': 320,    # localization sequences are padded to this length
      'train_window': 0,    # > 0: train on random crops of this many frames
  })


def model_config(width=1.0):
  return ml_collections.ConfigDict({
      'backbone': {'name': 'agcn', 'width': width},
      'feature_dim': 128,   # MoCo embedding size
      'num_snippets': 19,   # S, dense snippets per clip
      'taps': (1, 7, 10),   # backbone units fused by the U-shaped module
      'head': 'ufusion',    # 'ufusion' | 'upsample' (baseline)
      'head_dim': 512,
      'num_classes': 0,     # localization classes; 0 = from the dataset
  })


def checkpoint_config():
  return ml_collections.ConfigDict({'save_interval_steps': 1000,
                                    'max_to_keep': 3})


def run_config(stage, seed):
  """Fields every training stage shares."""
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.seed = seed
  c.num_devices = 0          # data-parallel devices; 0 = all
  c.nonfinite = 'stop'       # on a NaN/inf loss: 'stop' (keep last good ckpt) | 'skip'
  return c


def pretrain_config():
  c = run_config('pretrain', seed=0)
  c.data = data_config()
  c.model = model_config()
  c.pretrain = {
      'momentum': 0.999, 'temperature': 0.07,
      'queue_size': 32768, 'snippet_queue_size': 32768,
      'snippet_weight': 1.5,   # lambda; 0 = video-level MoCo baseline
      'negatives': 'queue',    # 'queue' (MoCo) | 'in_batch' (global batch, no queue)
  }
  c.augment = {
      'crop_padding_ratio': 6, 'shear_amplitude': 0.5,
      'noise_std': 0.01, 'noise_prob': 0.5,
      'blur_kernel': 15, 'blur_sigma': (0.1, 2.0), 'blur_prob': 0.5,
      'axis_mask_prob': 0.5,
  }
  c.optimizer = {'name': 'sgd', 'lr': 0.1, 'momentum': 0.9,
                 'weight_decay': 1e-4, 'grad_clip_norm': 0.0}
  c.batch_size = 128
  c.num_epochs = 600
  c.num_steps = 0            # > 0 overrides num_epochs
  c.warmup_epochs = 10.0
  c.lr_decay_epochs = (550,)
  c.log_every = 50
  c.checkpoint = checkpoint_config()
  return c


def eval_config():
  return ml_collections.ConfigDict({
      'batch_size': 8,
      'decoder': 'outer_inner',
      'thresholds': (0.03, 0.035, 0.04, 0.045, 0.05),
      'min_length': 3, 'outer_ratio': 0.25, 'outer_weight': 0.6,
      'nms_threshold': 0.2,
      'metric': 'exact',
      'iou_thresholds': (0.1, 0.2, 0.3, 0.4, 0.5),
      'num_plot_sequences': 4,
      'animate': True,      # skeleton.gif of the first eval sequence
  })


def finetune_config():
  c = run_config('finetune', seed=5)
  c.protocol = 'finetune'    # 'finetune' | 'linear' | 'knn'
  c.linear_train_fusion = True  # linear probe: also train the U-fusion module
  c.init = 'pretrained'      # 'pretrained' | 'random'
  c.pretrain_workdir = ''
  c.label_fraction = 1.0
  c.data = data_config()
  c.model = model_config()
  c.optimizer = {'name': 'adam', 'lr': 1e-4, 'weight_decay': 1e-4,
                 'grad_clip_norm': 0.0}
  c.batch_size = 8
  c.num_epochs = 40
  c.num_steps = 0
  c.warmup_epochs = 10.0
  c.lr_decay_epochs = (30, 35)
  c.log_every = 10
  c.checkpoint = checkpoint_config()
  c.eval = eval_config()
  c.knn = {'k': 20, 'temperature': 0.07, 'max_bank_frames': 100_000,
           'chunk': 4096}   # protocol='knn' (no training)
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
