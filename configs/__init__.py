"""Experiment configs, one module per file: ``configs/NAME.py``.

Each module has ``VARIANTS`` ({token: description}) and ``get_config(arg)``,
``arg`` being the comma-separated variant tokens (parsed with
``skel_jax.cli.parse_variant``). The command line loads a file by path
(``--config=configs/NAME.py:TOKENS``, ml_collections); code loads it here:

  import configs
  c = configs.load('pretrain_synthetic', 'aimclr,smoke')
  c = configs.load('configs/pretrain_synthetic.py:aimclr,smoke')  # same

Both need the repository root on ``sys.path``: the working directory of
``python -m ...`` run from it, or the editable install (``make install``).
"""

import importlib
import os

DIR = os.path.dirname(os.path.abspath(__file__))


def names():
  """The config names (``configs/NAME.py``), sorted."""
  return sorted(
    f[:-3]
    for f in os.listdir(DIR)
    if f.endswith('.py') and not f.startswith('_')
  )


def split(spec):
  """``'[configs/]NAME[.py][:TOKENS]'`` -> (NAME, TOKENS or None)."""
  path, sep, arg = spec.partition(':')
  name = os.path.basename(path)
  if name.endswith('.py'):
    name = name[:-3]
  return name, (arg if sep else None)


def module(spec):
  """The module of config ``spec`` (a name or ``configs/NAME.py``; tokens
  after ``:`` are ignored)."""
  name, _ = split(spec)
  path = spec.partition(':')[0]
  here = os.path.join(DIR, name + '.py')
  if os.path.dirname(path) and os.path.isfile(path):
    if not os.path.isfile(here) or not os.path.samefile(path, here):
      raise ValueError(
        f'{path} is not a file of {DIR} (only those load here; '
        '--config=FILE loads any file)'
      )
  if name not in names():
    raise ValueError(
      f'no config {name!r} in {DIR}; configs: {", ".join(names())}'
    )
  return importlib.import_module(f'{__name__}.{name}')


def load(spec, arg=None):
  """The ConfigDict of ``configs/NAME.py`` with variant tokens ``arg``.

  ``spec``: ``NAME``, ``NAME.py`` or ``configs/NAME.py``, optionally with
  ``:TOKENS`` (then ``arg`` must be None), as in ``--config=``.
  """
  name, spec_arg = split(spec)
  if spec_arg is not None and arg is not None:
    raise ValueError(f'variant tokens given twice: {spec!r} and arg={arg!r}')
  return module(name).get_config(spec_arg if arg is None else arg)
