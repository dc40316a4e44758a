r"""Entry point for every stage: ``python -m skel_jax.main --config=... --workdir=...``.

  python -m skel_jax.main --config=configs/FILE.py[:TOKEN,...] --workdir=DIR \
      [--data_dir=data] [--config.KEY=VALUE ...] [--verbosity=0]

The config's ``stage`` field picks pretraining, localization finetuning, the
demo pipeline or the study. Each config file carries its own run command in
its docstring; ``--help`` lists the config files and their variant tokens.
"""

import difflib
import re
import sys

import jax
from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'Experiment config file, configs/FILE.py[:TOKEN,...] (the files and their '
  'variant tokens: --help).',
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  'workdir',
  None,
  'Run directory (output): checkpoints, logs, TensorBoard events, results.',
)
_DATA_DIR = flags.DEFINE_string(
  'data_dir',
  None,
  'TFDS data directory (as in build_data); sets config.data.dir of every '
  "stage of the run. Default: the config's (data).",
)
_MULTIHOST = flags.DEFINE_bool(
  'multihost',
  False,
  'Call jax.distributed.initialize() first (auto-detects '
  'SLURM, TPU pods and Kubernetes; or pass the three flags below).',
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address', None, 'host:port of process 0 (multihost).'
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, 'Total processes (multihost).'
)
_PROCESS_ID = flags.DEFINE_integer(
  'process_id', None, 'This process (multihost).'
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
  'allow_config_change',
  False,
  'Continue a workdir whose recorded config '
  'differs from this one (beyond run length, log/checkpoint intervals, '
  'devices and data location); the change is appended to '
  'WORKDIR/config_history.jsonl.',
)


# The paper's name for a loss weight -> the key that holds it.
KEY_ALIASES = {'lambda': 'pretrain.snippet_weight'}


def _dotted_keys(config, prefix=''):
  for key, value in config.items():
    yield prefix + key
    if hasattr(value, 'items'):
      yield from _dotted_keys(value, prefix + key + '.')


def closest_key(key, valid):
  """The valid dotted key nearest to ``key``: whole path and last part both
  count, so ``lr`` finds ``optimizer.lr`` and ``pretrain.snipet_weight`` its
  sibling."""

  def ratio(a, b):
    return difflib.SequenceMatcher(None, a, b).ratio()

  last = key.rsplit('.', 1)[-1]
  for alias, target in KEY_ALIASES.items():
    if target in valid and ratio(last, alias) >= 0.8:
      return target
  return max(
    valid, key=lambda k: ratio(key, k) + ratio(last, k.rsplit('.', 1)[-1])
  )


def unknown_override(argv, config_flag='config'):
  """One line naming the first ``--config.KEY`` override the config lacks (and
  the closest valid key), or None when every override names a real key."""
  spec = None
  for i, arg in enumerate(argv):
    m = re.match(rf'^--?{config_flag}(=(.*))?$', arg)
    if m:
      spec = (
        m.group(2)
        if m.group(1)
        else (argv[i + 1] if i + 1 < len(argv) else None)
      )
  if spec is None:
    return None
  try:
    config = flags.FLAGS[config_flag].parser.parse(spec)
  except Exception:  # pylint: disable=broad-except
    return None  # the config file itself is broken: its own error is clearer
  valid = set(_dotted_keys(config))
  for arg in argv:
    m = re.match(rf'^--?(?:no)?{config_flag}\.([^=]+)', arg)
    if not m or '[' in m.group(1) or m.group(1) in valid:
      continue
    key = m.group(1)
    leaves = sorted(k for k in valid if k.count('.') >= key.count('.') - 1)
    return (
      f'unknown key --{config_flag}.{key}; the closest valid key is '
      f'{config_flag}.{closest_key(key, leaves or sorted(valid))}'
    )
  return None


def config_file_error(error):
  """The one-line message of a config file's own ValueError (e.g. an unknown
  variant token) inside absl's flag error, or None. ml_collections re-raises
  it as the same type with a traceback as message, so the deepest one is the
  config's own."""
  chain, e = [], error
  while e is not None and all(e is not c for c in chain):
    chain.append(e)
    e = e.__cause__ or e.__context__
  for e in reversed(chain):
    if isinstance(e, (ValueError, TypeError)) and str(e).strip():
      return str(e).strip().splitlines()[0]
  return None


def _config_spec(argv, config_flag='config'):
  for i, arg in enumerate(argv):
    m = re.match(rf'^--?{config_flag}(=(.*))?$', arg)
    if m:
      return m.group(2) if m.group(1) else argv[i + 1 : i + 2] or None
  return None


def parse_flags(argv):
  """absl's parser, but a mistyped ``--config.KEY`` or an unknown variant
  token is one line (exit 2) instead of a traceback from ml_collections."""
  from skel_jax import cli  # pylint: disable=g-import-not-at-top

  cli.extend_help(argv)
  try:
    return flags.FLAGS(argv)
  except flags.IllegalFlagValueError as e:
    message = config_file_error(e)
    if message is None:  # e.g. a missing --workdir: absl's one line
      return app.parse_flags_with_usage(argv)
    spec = _config_spec(argv)
    print(
      f'config error: --config={spec}: {message}', file=sys.stderr, flush=True
    )
    sys.exit(2)
  except (AttributeError, KeyError):
    message = unknown_override(argv)
    if message is None:
      raise
    print(f'config error: {message}', file=sys.stderr, flush=True)
    sys.exit(2)
  except flags.Error:
    # absl's own one-line message and usage hint (exit 1).
    return app.parse_flags_with_usage(argv)


def run(config, workdir):
  stage = config.stage
  if stage == 'pretrain':
    from skel_jax import pretrain

    return pretrain.train(config, workdir)
  elif stage == 'finetune':
    from skel_jax import finetune

    return finetune.train_and_evaluate(config, workdir)
  elif stage == 'demo':
    from skel_jax import demo

    return demo.run(config, workdir)
  elif stage == 'study':
    from skel_jax import study

    return study.run(config, workdir)
  else:
    raise ValueError(
      f'config.stage={stage!r}: expected pretrain, finetune, demo or study'
    )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from skel_jax import cli  # pylint: disable=g-import-not-at-top

  # Orbax logs every save at INFO; keep the console for progress and results
  # unless --verbosity asks for more.
  cli.apply_verbosity()
  if _MULTIHOST.value:
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  from skel_jax import train_utils  # pylint: disable=g-import-not-at-top

  train_utils.enable_compilation_cache()
  from skel_jax import checkpoint
  from skel_jax import config_validation
  from skel_jax import run_record

  try:
    config = _CONFIG.value
    if _DATA_DIR.value:
      cli.set_data_dir(config, _DATA_DIR.value)
    with run_record.allow_config_change(_ALLOW_CONFIG_CHANGE.value):
      run(config, _WORKDIR.value)
  except config_validation.ConfigError as e:
    print(f'config error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  except (
    checkpoint.CheckpointMismatchError,
    checkpoint.NoReadableCheckpointError,
  ) as e:
    print(f'checkpoint error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  # Required only for the CLI, so scripts can import ``run``.
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=parse_flags)
