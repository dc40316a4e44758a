r"""Entry point for every stage: ``python -m skel_jax.main --config=... --workdir=...``.

The config's ``stage`` field picks pretraining, localization finetuning or the
demo pipeline. Each config file carries its own run command in its docstring.
"""
import os

from absl import app
from absl import logging
from absl import flags
import jax
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py[:variant]).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for checkpoints, logs and results.')
flags.mark_flags_as_required(['config', 'workdir'])


def enable_compilation_cache():
  """Persistent XLA cache: repeated stages and re-runs skip recompilation."""
  cache = os.environ.get('SKEL_JAX_CACHE_DIR', os.path.join('.cache', 'jax'))
  jax.config.update('jax_compilation_cache_dir', os.path.abspath(cache))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


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
  else:
    raise ValueError(f'config.stage={stage!r}: expected pretrain, finetune '
                     'or demo')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Orbax logs every save at INFO; keep the console for progress and results.
  logging.set_verbosity(logging.WARNING)
  enable_compilation_cache()
  run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
