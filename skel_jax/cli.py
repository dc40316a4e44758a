"""What every command-line entry point shares (issue 13).

The convention, the same in ``main``, ``study``, ``build_data``,
``evaluate``, ``export`` and ``probe``:

- ``--workdir``: a run's directory. ``main`` and ``study`` create it;
  ``export`` and ``probe`` read it.
- ``--out``: what a tool (``export``, ``probe``, ``evaluate``) writes, when it
  is not a run directory.
- ``--data_dir``: the TFDS data directory. ``build_data`` writes it; ``main``
  and ``study`` read it (the same as ``--config.data.dir``, for every data
  config of the run).
- ``--verbosity`` (absl's own, ``-v``): library logs. The default here is
  WARNING, so Orbax / TFDS / JAX INFO lines only show with ``--verbosity=0``
  (INFO) or higher; one progress bar per stage.
- ``--config=configs/FILE.py[:TOKEN,TOKEN...]``: ``--help`` lists the config
  files and their variant tokens; an unknown token fails with one line
  naming the valid ones (exit 2).
"""

import logging as std_logging
import os
import sys
import textwrap

from absl import flags
from absl import logging

CONVENTION = """\
Flags shared by every skel_jax command: --workdir is a run directory (main
and study write it, export and probe read it), --out is what a tool writes,
--data_dir the TFDS data directory; library logs (Orbax, TFDS, JAX) are off
below WARNING unless --verbosity=0 (INFO) or higher is given."""


class VariantError(ValueError):
  """An unknown ``--config=FILE:TOKENS`` variant token."""


def parse_variant(arg, valid, config_name='this config', exclusive=()):
  """Splits ``FILE:a,b`` tokens, checking each against ``valid``.

  Args:
    arg: the variant string after ``:`` (None or '' for none).
    valid: {token: description} (or any iterable of tokens).
    config_name: named in the error.
    exclusive: groups of tokens of which at most one may be given.

  Returns:
    The tokens, in order.

  Raises:
    VariantError: naming the unknown token(s) and listing the valid ones.
  """
  tokens = [t for t in (arg or '').split(',') if t]
  bad = [t for t in tokens if t not in valid]
  valid_text = ', '.join(valid)
  if bad:
    raise VariantError(
      f'{config_name}: unknown variant token(s) {", ".join(map(repr, bad))}; '
      f'valid tokens (comma-separated): {valid_text}'
    )
  for group in exclusive:
    given = [t for t in tokens if t in group]
    if len(given) > 1:
      raise VariantError(
        f'{config_name}: at most one of {", ".join(group)} (got '
        f'{", ".join(given)}); valid tokens (comma-separated): {valid_text}'
      )
  return tokens


def config_listing(only=None, width=79):
  """Text listing ``configs/*.py`` (the ``configs`` package): first
  docstring line and variant tokens (each module's ``VARIANTS``, {token:
  description})."""
  try:
    import configs  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return f'(no configs package: {e})'
  if not hasattr(configs, 'load'):  # some other folder named configs
    return f'(no configs package: {configs.__name__} has no load())'
  shown = os.path.relpath(configs.DIR)
  if shown.startswith('..'):
    shown = configs.DIR
  lines = [f'Configs ({shown}/FILE.py[:TOKEN,...]) and their variant tokens:']
  for stem in configs.names():
    if only is not None and not only(stem):
      continue
    try:
      module = configs.module(stem)
    except Exception as e:  # pylint: disable=broad-except
      lines.append(f'  {stem}: (cannot be loaded: {e})')
      continue
    doc = (module.__doc__ or '').strip().splitlines()
    lines.append(f'  {stem}.py: {doc[0] if doc else ""}')
    variants = getattr(module, 'VARIANTS', None) or {}
    if not variants:
      lines.append('      (no variant tokens)')
    for token, desc in dict(variants).items():
      lines.append(
        textwrap.fill(
          f':{token:<12} {desc}',
          width=width,
          initial_indent='      ',
          subsequent_indent=' ' * 20,
        )
      )
  return '\n'.join(lines) + '\n'


def extend_help(argv=None, only=None):
  """When ``--help`` / ``-h`` / ``--helpfull`` is asked for, appends the
  convention and (unless ``only`` is False) the config listing to
  ``__main__``'s docstring (absl prints it as the usage text); returns
  whether help was asked for."""
  argv = sys.argv if argv is None else argv
  if not any(
    a in ('--help', '-h', '-?', '--helpfull', '--helpshort') for a in argv
  ):
    return False
  main_module = sys.modules.get('__main__')
  if main_module is None:
    return False
  extra = '\n\n' + CONVENTION + '\n'
  if only is not False:
    extra += '\n' + config_listing(only=only)
  main_module.__doc__ = (main_module.__doc__ or '') + extra
  return True


# ---------------------------------------------------------------------------
# Quiet by default.
# ---------------------------------------------------------------------------
_NOISE = (
  'Given directory is read only',  # Orbax, on every read-only restore
)


class _DropNoise(std_logging.Filter):
  def filter(self, record):
    try:
      message = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      return True
    return not any(n in message for n in _NOISE)


def verbose() -> bool:
  """Whether the user asked for library logs (``--verbosity`` >= 0)."""
  try:
    flag = flags.FLAGS['verbosity']
  except KeyError:
    return False
  return bool(flag.present) and flag.value >= 0


def apply_verbosity():
  """WARNING unless ``--verbosity`` was given; call after flag parsing."""
  if verbose():
    return
  logging.set_verbosity(logging.WARNING)
  for name in ('absl', 'orbax', 'jax', 'tensorflow_datasets'):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _DropNoise) for f in handler.filters):
    handler.addFilter(_DropNoise())


def quiet_tfds(builder=None):
  """Without ``--verbosity``: no TFDS progress bars ("Generating splits",
  "Shuffling ...") and none of its bold "Downloading and preparing dataset
  Unknown size ..." / "... downloaded and prepared" lines; the converters'
  own bar (one per split) and build_data's summary remain."""
  if verbose():
    return
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  tfds.disable_progress_bar()
  if builder is not None:
    builder._log_download_bytes = lambda: None  # pylint: disable=protected-access
    builder._log_download_done = lambda: None  # pylint: disable=protected-access


def set_data_dir(config, data_dir):
  """Points every data config in ``config`` (nested stages included) at
  ``data_dir``; returns how many it changed."""
  count = 0
  if not hasattr(config, 'items'):
    return 0
  if 'build_if_missing' in config and 'dir' in config:
    config['dir'] = data_dir
    count += 1
  for _, value in config.items():
    if hasattr(value, 'items'):
      count += set_data_dir(value, data_dir)
  return count
