"""Checks a config before anything is built or compiled.

Every problem is one line naming the key, its value and what is allowed:
unknown keys (against the stage's defaults), wrong types, and values that
would only fail later inside JAX (batch not divisible by the device count,
queues not divisible by the batch, more snippets than backbone time steps, ...).

The allowed names come from the registries the code dispatches on:
``bases.REGISTRY``, ``models.BACKBONES`` / ``models.HEADS``,
``optim.OPTIMIZERS``, ``protocols.PROTOCOLS``, ``postprocess.DECODERS``,
``metrics.METRICS``, ``preprocess.CONFIG_FAMILIES`` and the dataset registry.
"""

import jax

from skel_jax import bases
from skel_jax import config_defaults
from skel_jax import metrics
from skel_jax import models
from skel_jax import optim
from skel_jax import postprocess
from skel_jax import preprocess
from skel_jax import protocols

STAGES = ('pretrain', 'finetune', 'demo', 'study')


class ConfigError(ValueError):
  """A config value that cannot work; the message is one line."""


def fail(key, value, expected):
  raise ConfigError(f'config.{key}={value!r}: {expected}')


def _type_ok(value, default):
  if isinstance(default, bool):
    return isinstance(value, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(default, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  if isinstance(default, str):
    return isinstance(value, str)
  return True


def check_schema(config, defaults, prefix=''):
  """Unknown keys and type mismatches against the defaults, recursively."""
  for key in config.keys():
    path = f'{prefix}{key}'
    value = config[key]
    if key not in defaults:
      allowed = ', '.join(sorted(defaults.keys()))
      fail(path, value, f'unknown key; allowed keys here: {allowed}')
    default = defaults[key]
    if hasattr(default, 'keys'):
      if not hasattr(value, 'keys'):
        fail(path, value, 'expected a nested config')
      check_schema(value, default, prefix=path + '.')
    elif default is not None and not _type_ok(value, default):
      fail(
        path,
        value,
        f'expected {type(default).__name__} like the default {default!r}',
      )


def one_of(key, value, allowed):
  if value not in allowed:
    fail(key, value, f'expected one of {list(allowed)}')


def _positive(key, value):
  if not value > 0:
    fail(key, value, 'must be > 0')


def _check_data(data, prefix):
  from skel_jax import datasets

  one_of(f'{prefix}data.name', data.name, sorted(datasets.REGISTRY))
  try:
    configs = [
      c.name for c in datasets.builder_class(data.name).BUILDER_CONFIGS
    ]
  except ImportError as e:  # builder package missing
    fail(f'{prefix}data.name', data.name, f'builder cannot be imported ({e})')
  one_of(f'{prefix}data.config', data.config, configs)
  if not data.dir:
    fail(f'{prefix}data.dir', data.dir, 'must name a TFDS data directory')
  one_of(
    f'{prefix}data.preprocess', data.preprocess, preprocess.CONFIG_FAMILIES
  )
  _positive(f'{prefix}data.num_persons', data.num_persons)
  if data.train_window < 0:
    fail(f'{prefix}data.train_window', data.train_window, 'expected >= 0')


def _check_model(model, prefix):
  one_of(
    f'{prefix}model.backbone.name',
    model.backbone.name,
    sorted(models.BACKBONES),
  )
  _positive(f'{prefix}model.backbone.width', model.backbone.width)
  one_of(f'{prefix}model.head', model.head, sorted(models.HEADS))
  _positive(f'{prefix}model.num_snippets', model.num_snippets)
  units = len(models.BACKBONES[model.backbone.name].strides)
  if len(model.taps) != 3 or any(not 1 <= t <= units for t in model.taps):
    fail(
      f'{prefix}model.taps',
      model.taps,
      f'expected 3 backbone unit indices in 1..{units}',
    )


def _check_run(c, prefix, devices):
  if c.num_devices < 0 or c.num_devices > jax.device_count():
    fail(
      f'{prefix}num_devices',
      c.num_devices,
      f'expected 0 (all) .. {jax.device_count()}',
    )
  fsdp = c.get('fsdp', 1)
  n = c.num_devices or jax.device_count()
  if not isinstance(fsdp, int) or isinstance(fsdp, bool) or fsdp < 1:
    fail(f'{prefix}fsdp', fsdp, 'expected an int >= 1 (1 = pure data parallel)')
  if n % fsdp:
    fail(
      f'{prefix}fsdp',
      fsdp,
      f'must divide the {n} devices (num_devices or all devices)',
    )
  one_of(f'{prefix}nonfinite', c.nonfinite, ('stop', 'skip'))
  one_of(f'{prefix}optimizer.name', c.optimizer.name, sorted(optim.OPTIMIZERS))
  _positive(f'{prefix}optimizer.lr', c.optimizer.lr)
  _positive(f'{prefix}batch_size', c.batch_size)
  if c.batch_size % devices:
    fail(
      f'{prefix}batch_size',
      c.batch_size,
      f'must be divisible by the {devices} data-parallel devices',
    )
  if c.batch_size % jax.process_count():
    fail(
      f'{prefix}batch_size',
      c.batch_size,
      f'must be divisible by the {jax.process_count()} processes',
    )
  if c.num_steps <= 0 and c.num_epochs <= 0:
    fail(
      f'{prefix}num_epochs', c.num_epochs, 'num_epochs or num_steps must be > 0'
    )
  _positive(f'{prefix}log_every', c.log_every)
  _positive(
    f'{prefix}checkpoint.save_interval_steps', c.checkpoint.save_interval_steps
  )
  _positive(f'{prefix}checkpoint.max_to_keep', c.checkpoint.max_to_keep)


def _check_pretrain(c, prefix, devices):
  _check_run(c, prefix, devices)
  _check_data(c.data, prefix)
  _check_model(c.model, prefix)
  p = c.pretrain
  one_of(f'{prefix}pretrain.negatives', p.negatives, ('queue', 'in_batch'))
  one_of(
    f'{prefix}pretrain.snippet_positive',
    p.snippet_positive,
    ('argmax', 'geometry'),
  )
  one_of(
    f'{prefix}pretrain.snippet_negatives',
    p.snippet_negatives,
    ('video_mean', 'snippets'),
  )
  # Entries each step enqueues: one per video, or one per snippet.
  per_step = {
    'queue_size': c.batch_size,
    'snippet_queue_size': c.batch_size
    * (c.model.num_snippets if p.snippet_negatives == 'snippets' else 1),
  }
  for name, entries in per_step.items():
    size = p[name]
    if p.negatives == 'queue' and (size <= 0 or size % entries):
      fail(
        f'{prefix}pretrain.{name}',
        size,
        f'must be a positive multiple of the {entries} keys each step '
        'enqueues (batch_size, times num_snippets for the snippet queue '
        "with snippet_negatives='snippets')",
      )
  if not 0.0 <= p.momentum < 1.0:
    fail(f'{prefix}pretrain.momentum', p.momentum, 'expected 0 <= m < 1')
  _positive(f'{prefix}pretrain.temperature', p.temperature)
  if p.snippet_weight < 0:
    fail(
      f'{prefix}pretrain.snippet_weight',
      p.snippet_weight,
      'expected >= 0 (0 = video-level MoCo)',
    )
  one_of(f'{prefix}pretrain.base', p.base, sorted(bases.REGISTRY))
  one_of(
    f'{prefix}pretrain.compute_dtype', p.compute_dtype, ('float32', 'bfloat16')
  )
  if not isinstance(p.mining_epoch, int) or p.mining_epoch < -1:
    fail(
      f'{prefix}pretrain.mining_epoch',
      p.mining_epoch,
      'expected an epoch >= 0, or -1 for no mining',
    )
  banks = {
    'queue': min(p.queue_size, p.snippet_queue_size),
    'in_batch': c.batch_size - 1,
  }[p.negatives]
  for name in ('mining_topk', 'snippet_mining_topk'):
    if p.mining_epoch >= 0 and not 1 <= p[name] <= banks:
      fail(
        f'{prefix}pretrain.{name}',
        p[name],
        f'expected 1 .. {banks} (the negatives each query sees)',
      )
  # Frames of the query/key views (RVTCLR's keep T / tempo_ratio).
  base = bases.get(p.base)
  base.check(p, lambda key, value, why: fail(f'{prefix}{key}', value, why))
  frames = base.view_frames(c.data.clip_len, p)
  steps = models.BACKBONES[c.model.backbone.name].time_steps(frames)
  if c.model.num_snippets > steps:
    fail(
      f'{prefix}model.num_snippets',
      c.model.num_snippets,
      f'must be <= the {steps} backbone time steps of a '
      f'{frames}-frame {"tempo view" if frames < c.data.clip_len else "clip"}'
      ' (data.clip_len)',
    )


def _check_finetune(c, prefix, devices):
  _check_run(c, prefix, devices)
  _check_data(c.data, prefix)
  _check_model(c.model, prefix)
  one_of(f'{prefix}protocol', c.protocol, list(protocols.PROTOCOLS))
  _positive(f'{prefix}knn.k', c.knn.k)
  _positive(f'{prefix}knn.chunk', c.knn.chunk)
  one_of(f'{prefix}init', c.init, ('pretrained', 'random'))
  if not 0.0 < c.label_fraction <= 1.0:
    fail(f'{prefix}label_fraction', c.label_fraction, 'expected 0 < f <= 1')
  if c.data.pad_length < 8:
    fail(f'{prefix}data.pad_length', c.data.pad_length, 'expected >= 8')
  e = c.eval
  if e.batch_size <= 0 or e.batch_size % devices:
    fail(
      f'{prefix}eval.batch_size',
      e.batch_size,
      f'must be a positive multiple of the {devices} devices',
    )
  one_of(f'{prefix}eval.metric', e.metric, sorted(metrics.METRICS))
  one_of(f'{prefix}eval.decoder', e.decoder, list(postprocess.DECODERS))
  if not e.iou_thresholds or any(not 0 < t <= 1 for t in e.iou_thresholds):
    fail(
      f'{prefix}eval.iou_thresholds',
      e.iou_thresholds,
      'expected IoU thresholds in (0, 1]',
    )


def _check_study(config):
  devices = config.finetune.num_devices or jax.device_count()
  check_schema(config.finetune, config_defaults.finetune_config(), 'finetune.')
  _check_finetune(config.finetune, 'finetune.', devices)
  for protocol in config.protocols:
    one_of('protocols', protocol, list(protocols.PROTOCOLS))
  for method in config.methods:
    if method != 'random_init' and method not in config.pretrain_methods:
      fail(
        'methods',
        method,
        'needs an entry in pretrain_methods (or use random_init)',
      )
  for method, c in config.pretrain_methods.items():
    prefix = f'pretrain_methods.{method}.'
    check_schema(c, config_defaults.pretrain_config(), prefix)
    _check_pretrain(c, prefix, c.num_devices or jax.device_count())
  if not config.pretrain_seeds or not config.localization_seeds:
    fail(
      'pretrain_seeds',
      config.pretrain_seeds,
      'the study needs at least one pretraining and localization seed',
    )
  for protocol, seeds in config.protocol_localization_seeds.items():
    key = f'protocol_localization_seeds.{protocol}'
    one_of(key, protocol, list(config.protocols))
    if not seeds:
      fail(key, seeds, 'expected at least one localization seed')


def validate(config, workdir=None):
  """Raises ConfigError (one line) for the first problem found.

  What only a stage knows is checked there: the demo's method names
  (``demo.run``) and a pretrained source's files and architecture
  (``finetune.check_pretrained_source``).
  """
  if workdir is not None and not workdir:
    raise ConfigError('--workdir is empty: name a directory for the run')
  stage = config.get('stage')
  one_of('stage', stage, STAGES)
  if stage == 'demo':
    devices = config.pretrain.num_devices or jax.device_count()
    check_schema(
      config.pretrain, config_defaults.pretrain_config(), 'pretrain.'
    )
    check_schema(
      config.finetune, config_defaults.finetune_config(), 'finetune.'
    )
    _check_pretrain(config.pretrain, 'pretrain.', devices)
    for method, c in config.get('pretrain_methods', {}).items():
      check_schema(
        c, config_defaults.pretrain_config(), f'pretrain_methods.{method}.'
      )
      _check_pretrain(c, f'pretrain_methods.{method}.', devices)
    _check_finetune(config.finetune, 'finetune.', devices)
    return
  if stage == 'study':
    _check_study(config)
    return
  devices = config.num_devices or jax.device_count()
  if stage == 'pretrain':
    check_schema(config, config_defaults.pretrain_config())
    _check_pretrain(config, '', devices)
  else:
    check_schema(config, config_defaults.finetune_config())
    _check_finetune(config, '', devices)
    if config.init == 'pretrained':
      if not config.pretrain_workdir:
        fail(
          'pretrain_workdir',
          config.pretrain_workdir,
          'init=pretrained needs a pretraining workdir or an export dir',
        )
