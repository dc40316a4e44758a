"""Config validation: one clear line per problem, before anything compiles."""

import os
import subprocess
import sys

import pytest

from skel_jax import config_defaults
from skel_jax import config_validation
from skel_jax import finetune
from skel_jax.config_validation import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pretrain():
  c = config_defaults.pretrain_config()
  c.batch_size = 16
  c.pretrain.queue_size = 64
  c.pretrain.snippet_queue_size = 64
  c.data.clip_len = 64
  c.model.num_snippets = 8
  return c


def _fake_pretrain_workdir(path, width=1.0, steps=(1,)):
  """config.json and step folders: what validation reads of a workdir."""
  c = config_defaults.pretrain_config()
  c.model.backbone.width = width
  os.makedirs(os.path.join(path, 'checkpoints'), exist_ok=True)
  for step in steps:
    os.makedirs(os.path.join(path, 'checkpoints', str(step)), exist_ok=True)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    f.write(c.to_json_best_effort())
  return str(path)


def _finetune(tmp_path):
  c = config_defaults.finetune_config()
  c.pretrain_workdir = _fake_pretrain_workdir(tmp_path)
  return c


def _validate(config, workdir='w'):
  """The checks a stage runs before building anything: the config's, and a
  finetune run's pretrained source (``finetune.check_pretrained_source``)."""
  config_validation.validate(config, workdir)
  if config.stage == 'finetune':
    finetune.check_pretrained_source(config)


def test_defaults_pass(tmp_path):
  _validate(_pretrain())
  _validate(_finetune(tmp_path))


def _expect(config, *fragments, workdir='w'):
  with pytest.raises(ConfigError) as e:
    _validate(config, workdir)
  msg = str(e.value)
  assert '\n' not in msg
  for f in fragments:
    assert f in msg, msg
  return msg


def test_unknown_key_names_key_and_allowed_keys():
  c = _pretrain()
  c.pretrain.unlock()
  c.pretrain.snipet_weight = 1.0  # typo
  _expect(c, 'config.pretrain.snipet_weight', 'unknown key', 'snippet_weight')


def test_wrong_type():
  c = _pretrain()
  c.unlock()
  del c['log_every']
  c.log_every = 'often'
  _expect(c, 'config.log_every', 'expected int')


def test_batch_not_divisible_by_devices():
  c = _pretrain()
  c.batch_size = 12  # conftest: 8 devices
  c.pretrain.queue_size = 24
  c.pretrain.snippet_queue_size = 24
  _expect(c, 'config.batch_size=12', 'divisible by the 8')


def test_queue_not_divisible_by_batch():
  c = _pretrain()
  c.pretrain.snippet_queue_size = 40
  c.pretrain.snippet_negatives = 'video_mean'
  _expect(c, 'config.pretrain.snippet_queue_size=40', 'multiple of the 16 keys')


def test_snippet_queue_holds_whole_steps_of_snippets():
  # Per-snippet negatives: each step enqueues batch_size x num_snippets keys.
  c = _pretrain()
  c.pretrain.snippet_negatives = 'snippets'
  c.pretrain.snippet_queue_size = 16 * 4
  _expect(
    c,
    'config.pretrain.snippet_queue_size=64',
    f'multiple of the {16 * c.model.num_snippets} keys',
  )


def test_too_many_snippets_for_clip():
  c = _pretrain()
  c.model.num_snippets = 19  # 64 frames -> 8 AGCN time steps
  _expect(c, 'config.model.num_snippets=19', '8 backbone time steps')


def test_unknown_dataset_and_config():
  c = _pretrain()
  c.data.name = 'ntu'
  _expect(c, "config.data.name='ntu'", 'synthetic_skeleton')
  c = _pretrain()
  c.data.config = 'huge'
  _expect(c, "config.data.config='huge'", "'default'", "'smoke'")


def test_enums_and_ranges(tmp_path):
  c = _finetune(tmp_path)
  c.protocol = 'knn-ish'
  _expect(c, "config.protocol='knn-ish'", "'linear'")
  c = _finetune(tmp_path)
  c.label_fraction = 0.0
  _expect(c, 'config.label_fraction=0.0')
  c = _pretrain()
  c.model.backbone.name = 'resnet'
  _expect(c, "config.model.backbone.name='resnet'", "'stgcn'")


def test_missing_pretrain_source_and_workdir(tmp_path):
  c = _finetune(tmp_path)
  c.pretrain_workdir = str(tmp_path / 'nope')
  _expect(c, 'config.pretrain_workdir', 'no checkpoints/ or model.json')
  _expect(_pretrain(), '--workdir', workdir='')


def test_cli_prints_one_line_and_exits_2(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'skel_jax.main',
      '--config=configs/pretrain_synthetic.py:smoke',
      f'--workdir={tmp_path}',
      '--config.batch_size=12',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('config error')]
  assert lines == [
    'config error: config.batch_size=12: must be divisible by '
    'the 8 data-parallel devices'
  ], proc.stderr[-2000:]
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_cli_unknown_key_is_one_line_with_closest_key(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'skel_jax.main',
      '--config=configs/pretrain_synthetic.py:smoke',
      f'--workdir={tmp_path}',
      '--config.pretrain.lamda=1',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [
    'config error: unknown key --config.pretrain.lamda; the closest valid '
    'key is config.pretrain.snippet_weight'
  ], proc.stderr[-2000:]
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
  'key,closest',
  [
    ('pretrain.snipet_weight', 'pretrain.snippet_weight'),
    ('lr', 'optimizer.lr'),
    ('model.backbone.widht', 'model.backbone.width'),
    ('data.pad_len', 'data.pad_length'),
  ],
)
def test_closest_key(key, closest):
  from skel_jax import main as main_lib

  valid = list(main_lib._dotted_keys(config_defaults.finetune_config()))
  valid += list(main_lib._dotted_keys(config_defaults.pretrain_config()))
  assert main_lib.closest_key(key, sorted(set(valid))) == closest


def test_pretrain_source_must_be_readable_and_fit(tmp_path):
  c = _finetune(tmp_path / 'ok')
  _validate(c)
  c.model.backbone.width = 0.25
  _expect(
    c,
    'backbone width 1.0 in the checkpoint, 0.25 in the config',
    '--config.model.backbone.width=1.0',
  )
  c = _finetune(tmp_path / 'ok')
  c.model.backbone.name = 'stgcn'
  _expect(c, 'backbone name agcn in the checkpoint, stgcn in the config')
  # A pretraining run that never saved: caught now, not after start-up.
  c.pretrain_workdir = _fake_pretrain_workdir(tmp_path / 'empty', steps=())
  c.model.backbone.name = 'agcn'
  _expect(c, 'no checkpoint in its checkpoints/')
  broken = _fake_pretrain_workdir(tmp_path / 'broken')
  with open(os.path.join(broken, 'config.json'), 'w') as f:
    f.write('{"stage": "pretrain", ')
  c.pretrain_workdir = broken
  _expect(c, 'unreadable (JSONDecodeError')
  # An export is described by model.json.
  export = tmp_path / 'export'
  os.makedirs(export / 'checkpoint')
  with open(export / 'model.json', 'w') as f:
    f.write('{"model": {"backbone": {"name": "agcn", "width": 0.25}}}')
  c.pretrain_workdir = str(export)
  _expect(c, 'backbone width 0.25 in the export, 1.0 in the config')


def test_cli_empty_pretrain_workdir_fails_before_anything_is_written(tmp_path):
  source = _fake_pretrain_workdir(tmp_path / 'pre', steps=())
  workdir = tmp_path / 'ft'
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'skel_jax.main',
      '--config=configs/finetune_synthetic.py:smoke',
      f'--workdir={workdir}',
      f'--config.pretrain_workdir={source}',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert (
    proc.stderr.strip()
    .splitlines()[-1]
    .startswith("config error: config.pretrain_workdir='")
  ), proc.stderr[-2000:]
  assert 'no checkpoint in its checkpoints/' in proc.stderr
  assert not workdir.exists()
