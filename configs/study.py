r"""Multi-seed study on the synthetic benchmark (``skel_jax.study``).

  make study
  # same as:
  python -m skel_jax.study --config=configs/study.py --workdir=runs/study
  python -m skel_jax.study --config=configs/study.py:smoke --workdir=/tmp/study
  python -m skel_jax.study --config=configs/study.py:gpu --workdir=runs/study_gpu
  # 18 runs per row (42 for finetune); in the default's workdir it reuses
  # the 3 x 3 cells:
  python -m skel_jax.study --config=configs/study.py:more_seeds \
      --workdir=runs/study

Methods: a random backbone, video-level MoCo (the base alone), snippet MoCo
as released (argmax positives, per-video mean negatives) and snippet MoCo with
this library's default (content-correct positives, per-snippet negatives).
Each pretrained method runs once per pretraining seed; each localization
protocol runs once per (pretraining seed, localization seed), at 20% labels.
The default variant fits in about an hour on a 2-core CPU; ``gpu`` is the
same design at the paper's clip length and S, full width, more steps and
seeds.
"""

import ml_collections

import configs
from skel_jax import cli

VARIANTS = {
  'smoke': 'a minutes-long CPU run of the whole design',
  'gpu': "the paper's clip length and S, full width, more steps and seeds",
  'more_seeds': '3 pretraining x 6 localization seeds: 18 runs per row '
  '(finetune: x 14, 42 runs)',
}

# Study method -> pretrain_synthetic.py variant tokens.
METHOD_TOKENS = {
  'video_moco': 'video',
  'snippet_release': 'release',
  'snippet_moco': '',
}


def get_config(arg=None):
  tokens = cli.parse_variant(
    arg,
    VARIANTS,
    'configs/study.py',
    exclusive=(('smoke', 'gpu', 'more_seeds'),),
  )
  variant = tokens[0] if tokens else ''
  c = ml_collections.ConfigDict()
  c.stage = 'study'
  c.methods = ('random_init',) + tuple(METHOD_TOKENS)
  c.protocols = ('linear', 'linear_fusion', 'finetune')
  c.label_fraction = 0.2
  # Probes train fresh heads on frozen features: a larger step size.
  c.protocol_lr = {'linear': 1e-2, 'linear_fusion': 1e-3}
  c.pretrain_seeds = (0, 1, 2)
  c.localization_seeds = (5, 6, 7)
  # Protocol -> its own localization seeds (else localization_seeds).
  c.protocol_localization_seeds = ml_collections.ConfigDict()
  c.pretrain_methods = {}
  for method, method_tokens in METHOD_TOKENS.items():
    toks = ','.join(
      t for t in (method_tokens, 'smoke' * (variant == 'smoke')) if t
    )
    p = configs.load('pretrain_synthetic', toks)
    p.num_steps = 150  # 12 epochs of the 800-sequence split
    # Every step logged (single-batch values): study.loss_trend averages
    # windows of them to tell whether the global loss falls.
    p.log_every = 1
    if variant == 'gpu':
      p.model.backbone.width = 1.0
      p.data.clip_len = 152
      p.model.num_snippets = 19
      p.num_steps = 2000
    c.pretrain_methods[method] = p
  c.finetune = configs.load(
    'finetune_synthetic', 'smoke' if variant == 'smoke' else None
  )
  c.finetune.num_epochs = 15
  c.finetune.warmup_epochs = 2.0
  c.finetune.lr_decay_epochs = (12,)
  c.finetune.eval.animate = False  # per-cell GIFs cost more than training
  c.finetune.eval.num_plot_sequences = 2
  if variant == 'gpu':
    c.finetune.model.backbone.width = 1.0
    c.finetune.model.num_snippets = 19
    c.finetune.model.head_dim = 512
    c.pretrain_seeds = (0, 1, 2, 3)
    c.localization_seeds = (5, 6, 7, 8)
  if variant == 'more_seeds':
    # The default's 3 x 3 cells plus more: run in the default's workdir,
    # it reuses them and its pretraining runs (another ~100 min on a 2-core
    # CPU). Localization seeds, not pretraining seeds: those are cheaper.
    c.localization_seeds = (5, 6, 7, 8, 9, 10)
    # Finetuning varies most between runs (random init: sd ~9 mAP, when
    # 75 steps leave it predicting background), so 42 runs per row for a
    # 95% half-width of about 3 -- for every method alike.
    c.protocol_localization_seeds.finetune = tuple(range(5, 19))
  if variant == 'smoke':
    # One pretraining run, four tiny localization runs (tests/test_study.py).
    c.methods = ('random_init', 'video_moco')
    c.protocols = ('linear',)
    c.pretrain_seeds = (0,)
    c.localization_seeds = (5, 6)
    for p in c.pretrain_methods.values():
      p.num_steps = 10
      p.probe.limit = 8
    # 2 epochs of the 6 labelled smoke sequences (1 step each): the test
    # checks the design and the report, not what 15 epochs would learn.
    c.finetune.num_epochs = 2
    c.finetune.warmup_epochs = 0.0
    c.finetune.lr_decay_epochs = ()
  c.data = c.finetune.data
  return c
