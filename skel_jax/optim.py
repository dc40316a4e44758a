"""Optimizers (a registry the training stages build from and config
validation reads) and the learning-rate schedule of both stages."""

import jax.numpy as jnp
import optax


def _l2_then(opt):
  """PyTorch-style ``weight_decay``: L2 added to the gradient, then ``opt``."""

  def make(opt_cfg, schedule):
    wd = opt_cfg.weight_decay
    return ([optax.add_decayed_weights(wd)] if wd else []) + [
      opt(opt_cfg, schedule)
    ]

  return make


# name -> (opt_cfg, schedule) -> list of optax transformations.
OPTIMIZERS = {
  # The released optimisers: weight decay as PyTorch's ``weight_decay``.
  'sgd': _l2_then(lambda c, s: optax.sgd(s, momentum=c.momentum)),
  'adam': _l2_then(lambda c, s: optax.adam(s)),
  # Large-batch options: decoupled decay; layer-wise trust ratio (LARS).
  'adamw': lambda c, s: [optax.adamw(s, weight_decay=c.weight_decay)],
  'lars': lambda c, s: [
    optax.lars(s, weight_decay=c.weight_decay, momentum=c.get('momentum', 0.9))
  ],
}


def make_optimizer(opt_cfg, schedule):
  """``OPTIMIZERS[opt_cfg.name]``, after global-norm clipping when
  ``grad_clip_norm`` > 0."""
  if opt_cfg.name not in OPTIMIZERS:
    raise ValueError(
      f'optimizer.name={opt_cfg.name!r}: expected one of {sorted(OPTIMIZERS)}'
    )
  chain = []
  if opt_cfg.get('grad_clip_norm', 0):
    chain.append(optax.clip_by_global_norm(opt_cfg.grad_clip_norm))
  return optax.chain(*chain, *OPTIMIZERS[opt_cfg.name](opt_cfg, schedule))


def warmup_step_schedule(base_lr, warmup_steps, decay_steps, decay_factor=0.1):
  """Linear warm-up to ``base_lr``, then x decay_factor at each decay step."""
  boundaries = {int(s): decay_factor for s in decay_steps}
  step_fn = optax.piecewise_constant_schedule(base_lr, boundaries)
  if warmup_steps <= 0:
    return step_fn

  def schedule(step):
    warm = base_lr * (step + 1) / warmup_steps
    return jnp.where(step < warmup_steps, warm, step_fn(step))

  return schedule


def epoch_schedule(config, num_sequences, drop_last):
  """(schedule, total steps, steps per epoch) of a run's config.

  Epochs convert to steps as the release's PyTorch data loaders count them:
  pretraining drops the last partial batch (``drop_last=True``: floor),
  localization keeps it (ceil). The input pipelines themselves stream
  batches across epoch boundaries, so only the schedule depends on this.
  ``config.num_steps`` > 0 overrides ``num_epochs``.
  """
  b = config.batch_size
  per_epoch = max(
    1, num_sequences // b if drop_last else -(-num_sequences // b)
  )
  total = config.get('num_steps', 0) or config.num_epochs * per_epoch
  schedule = warmup_step_schedule(
    config.optimizer.lr,
    int(config.warmup_epochs * per_epoch),
    [int(e * per_epoch) for e in config.lr_decay_epochs],
  )
  return schedule, total, per_epoch
