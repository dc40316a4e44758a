r"""The embedded default job: synthetic benchmark, 3 methods x 2 protocols.

  make demo
  # same as:
  python -m skel_jax.main --config=configs/demo.py --workdir=runs/demo
  python -m skel_jax.main --config=configs/demo.py:smoke --workdir=/tmp/demo_smoke
  python -m skel_jax.main --config=configs/demo.py:bases --workdir=runs/demo_bases
      # every base (SkeletonCLR, AimCLR, RVTCLR) with and without the snippet
      # loss, linear probe, same budget

Methods share one budget: the two MoCo runs pretrain for the same number of
steps; all six localization runs train the same U-fusion head for the same
number of epochs on the same 20% of labeled training sequences.
"""

import ml_collections

import configs
from skel_jax import cli

VARIANTS = {
  'smoke': 'a minutes-long CPU run of the whole pipeline',
  'bases': 'every base (SkeletonCLR, AimCLR, RVTCLR) with and without the '
  'snippet loss',
}


# ':bases' -> each base alone and with the snippet loss (pretrain_synthetic
# variant tokens of every pretrained demo method).
BASE_METHODS = {
  'video_moco': 'skeletonclr,video',
  'snippet_moco': 'skeletonclr',
  'aimclr': 'aimclr,video',
  'aimclr_snippet': 'aimclr',
  'rvtclr': 'rvtclr,video',
  'rvtclr_snippet': 'rvtclr',
}


def get_config(arg=None):
  tokens = cli.parse_variant(arg, VARIANTS, 'configs/demo.py')
  variant = 'smoke' if 'smoke' in tokens else None
  c = ml_collections.ConfigDict()
  c.stage = 'demo'
  c.methods = ('random_init', 'video_moco', 'snippet_moco')
  c.protocols = ('linear', 'finetune')
  c.label_fraction = 0.2
  c.linear_lr = 1e-3
  c.num_plot_sequences = 3
  c.pretrain = configs.load('pretrain_synthetic', variant)
  c.finetune = configs.load('finetune_synthetic', variant)
  c.data = c.pretrain.data.copy_and_resolve_references()
  c.data.pad_length = c.finetune.data.pad_length
  if variant is None:
    c.pretrain.num_steps = 100
    c.finetune.num_epochs = 20
    c.finetune.warmup_epochs = 2.0
    c.finetune.lr_decay_epochs = (16,)
  if 'bases' in tokens:
    # Every base +- snippet, same budget, linear probe (representation quality).
    c.methods = tuple(BASE_METHODS)
    c.protocols = ('linear',)
    c.pretrain_methods = {}
    for method, base_tokens in BASE_METHODS.items():
      p = configs.load(
        'pretrain_synthetic',
        ','.join([base_tokens] + ([variant] if variant else [])),
      )
      p.num_steps = c.pretrain.num_steps
      if p.pretrain.mining_epoch >= 0:  # half-way through the demo budget
        p.pretrain.mining_epoch = 0 if variant else 3  # 12 steps per epoch
      c.pretrain_methods[method] = p
  return c
