"""One CLI convention, quiet logs, variant tokens listed and checked (issue 13)."""

import os
import subprocess
import sys

import pytest
from absl import flags
from absl import logging

import configs
from skel_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = [os.path.join(configs.DIR, n + '.py') for n in configs.names()]


def _run(args, timeout=120):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run(
    [sys.executable, '-m', *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=env,
  )


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_every_config_lists_its_tokens_and_rejects_unknown_ones(path):
  module = configs.module(path)
  variants = getattr(module, 'VARIANTS', None)
  assert variants, f'{path} has no VARIANTS'
  with pytest.raises(cli.VariantError) as e:
    module.get_config('nosuchtoken')
  message = str(e.value)
  assert "'nosuchtoken'" in message
  for token in variants:
    assert token in message
  assert '\n' not in message


def test_main_unknown_token_is_one_line_exit_2(tmp_path):
  proc = _run(
    [
      'skel_jax.main',
      '--config=configs/finetune_babel.py:subset4',
      f'--workdir={tmp_path}',
    ]
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  (line,) = proc.stderr.strip().splitlines()
  assert line.startswith(
    'config error: --config=configs/finetune_babel.py:subset4: '
  )
  for token in ('subset1', 'subset2', 'subset3', 'smoke'):
    assert token in line


def test_main_help_lists_configs_and_their_tokens():
  proc = _run(['skel_jax.main', '--help'])  # absl's --help exits 1
  assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  out = proc.stdout
  for path in CONFIGS:
    assert f'  {os.path.basename(path)}: ' in out
  for token in (':aimclr', ':rvtclr', ':video', ':release', ':stgcn'):
    assert token in out
  for token in (':subset3', ':bases', ':gpu', ':smoke'):
    assert token in out
  assert '--data_dir' in out and '--workdir' in out


@pytest.mark.parametrize(
  'module,flags_shown',
  [
    ('skel_jax.study', ('--config', '--workdir', '--data_dir', 'study.py:')),
    ('skel_jax.build_data', ('--data_dir', 'pku_mmd: v1_xsub')),
    ('skel_jax.evaluate', ('--out',)),
    ('skel_jax.export', ('--workdir', '--out')),
    ('skel_jax.probe', ('--workdir', '--out', '--data_dir')),
  ],
)
def test_every_cli_help_states_the_convention(module, flags_shown):
  proc = _run([module, '--help'])
  assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  assert 'Flags shared by every skel_jax command' in proc.stdout
  for flag in flags_shown:
    assert flag in proc.stdout, flag


def test_build_data_is_quiet_by_default(tmp_path):
  args = [
    'skel_jax.build_data',
    '--dataset=synthetic_skeleton/smoke',
    f'--data_dir={tmp_path / "quiet"}',
  ]
  proc = _run(args)
  assert proc.returncode == 0, proc.stderr[-2000:]
  both = proc.stdout + proc.stderr
  for noise in ('Shuffling', 'Unknown size', 'Generating splits', 'I1', 'I0'):
    assert noise not in both, both[-2000:]
  assert (
    proc.stdout.strip()
    .splitlines()[-1]
    .startswith('[build_data] synthetic_skeleton/smoke:')
  )
  # --verbosity brings the library output back.
  proc = _run(args[:2] + [f'--data_dir={tmp_path / "loud"}', '--verbosity=0'])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'Shuffling' in proc.stderr


@pytest.fixture
def verbosity_flag():
  flag = flags.FLAGS['verbosity']
  saved = (flag.present, flag.value, logging.get_verbosity())
  yield flag
  flag.present, flag.value = saved[:2]
  logging.set_verbosity(saved[2])


def test_apply_verbosity_warning_unless_asked(verbosity_flag):
  import logging as std_logging

  logging.set_verbosity(logging.INFO)  # what a library may leave behind
  verbosity_flag.present = 0
  cli.apply_verbosity()
  assert logging.get_verbosity() == logging.WARNING
  assert not logging.level_info()  # Orbax / TFDS INFO lines are dropped

  def shown(message):
    record = std_logging.LogRecord(
      'absl', std_logging.WARNING, __file__, 1, message, None, None
    )
    return logging.get_absl_handler().filter(record)

  assert not shown('Given directory is read only=/x')  # Orbax, on restores
  assert shown('a real warning')
  # --verbosity=0 (INFO) asked for: left alone.
  verbosity_flag.present, verbosity_flag.value = 1, 0
  logging.set_verbosity(logging.INFO)
  cli.apply_verbosity()
  assert logging.get_verbosity() == logging.INFO


def test_data_dir_reaches_every_stage():
  demo = configs.load('demo', 'bases')
  assert cli.set_data_dir(demo, '/elsewhere') >= 3

  def dirs(c):
    for key, value in c.items():
      if hasattr(value, 'items'):
        if 'build_if_missing' in value:
          yield value.dir
        yield from dirs(value)

  found = list(dirs(demo))
  assert found and set(found) == {'/elsewhere'}


def test_parse_variant():
  assert cli.parse_variant('a,b', {'a': '', 'b': ''}) == ['a', 'b']
  assert cli.parse_variant(None, {'a': ''}) == []
  with pytest.raises(cli.VariantError, match='at most one of a, b'):
    cli.parse_variant('a,b', {'a': '', 'b': ''}, exclusive=(('a', 'b'),))
