"""Smoke test of ``skel_jax.bench``: the CLI runs at tiny sizes and writes the
documented JSON. Timings are never asserted (they depend on the machine)."""

import json
import os
import subprocess
import sys

import pytest

# Module fixtures/caches are shared: keep this file on one xdist worker.
pytestmark = pytest.mark.xdist_group('bench')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW_KEYS = {
  'name',
  'backbone',
  'method',
  'batch',
  'shape',
  'median_s',
  'iqr_s',
  'q25_s',
  'q75_s',
  'times_s',
  'first_call_s',
  'compile_s',
  'steps_per_s',
  'throughput',
  'unit',
}


def test_import_defines_no_flags():
  from absl import flags

  from skel_jax import bench  # noqa: F401

  for name in ('quick', 'backbones', 'repeats', 'pipeline_data_dir'):
    assert name not in flags.FLAGS


def test_vs_torch_without_torch_is_one_clear_error(monkeypatch):
  from skel_jax import bench

  monkeypatch.setitem(sys.modules, 'torch', None)  # import torch fails
  with pytest.raises(bench.TorchMissing, match=r'pip install -e \.\[torch\]'):
    bench.import_torch_peer()


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('bench')
  out = tmp / 'bench.json'
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    # One device and XLA's cheapest codegen: the ~20 s compile of the
    # pretraining step dominates this test, not the run.
    XLA_FLAGS='--xla_backend_optimization_level=0',
  )
  cmd = [
    sys.executable,
    '-m',
    'skel_jax.bench',
    '--quick',
    f'--out={out}',
    f'--pipeline_data_dir={tmp / "tfds"}',
    '--backbones=agcn',
    '--methods=skeletonclr+snippet',
    '--protocols=linear',
    '--width=0.0625',
    '--batch=8',
    '--clip_len=32',
    '--queue_size=64',
    '--ft_batch=8',
    '--pad_length=128',
    '--head_dim=16',
    '--infer_len=64',
    '--infer_batch=8',
    '--repeats=1',
    '--warmup=1',
    '--steps=1',
    '--pipeline_batches=2',
  ]
  proc = subprocess.run(
    cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'pretrain_step' in proc.stdout  # the printed table
  with open(out) as f:
    return json.load(f)


def test_rows_schema(report):
  names = [(r['name'], r['method']) for r in report['rows']]
  assert names == [
    ('pretrain_step', 'skeletonclr+snippet'),
    ('predict_step', 'finetune'),
    ('finetune_step', 'linear'),
    ('pretrain_pipeline', 'synthetic/smoke'),
    ('finetune_pipeline', 'synthetic/smoke'),
  ]
  for r in report['rows']:
    assert ROW_KEYS <= set(r), r['name']
    assert len(r['times_s']) == 1
    assert r['median_s'] > 0 and r['throughput'] > 0
    assert r['unit'] == (
      'frames/s' if r['name'] == 'predict_step' else 'samples/s'
    )
    is_pipeline = r['name'].endswith('_pipeline')
    assert (r['compile_s'] is None) == is_pipeline
    assert r['shape'][0] == r['batch'] and r['shape'][-2:] == [25, 3]
  pre = report['rows'][0]
  assert pre['shape'] == [8, 1, 32, 25, 3]
  assert report['rows'][1]['shape'] == [8, 1, 64, 25, 3]


def test_environment_and_configs(report):
  env = report['env']
  assert env['backend'] == 'cpu' and env['device_count'] == 1
  assert env['compilation_cache']['enabled'] is False
  for key in ('device_kind', 'cpu_count', 'versions', 'timestamp'):
    assert key in env
  assert env['versions']['jax']
  assert report['options']['width'] == 0.0625
  pre = report['configs']['pretrain/agcn/skeletonclr+snippet']
  assert pre['pretrain']['snippet_weight'] == 1.5
  assert pre['pretrain']['queue_size'] % pre['batch_size'] == 0
  assert pre['model']['num_snippets'] <= 32 // 8
  lin = report['configs']['finetune/agcn/linear']
  assert lin['protocol'] == 'linear' and lin['model']['num_classes'] == 10
  assert set(report['compile_s']) == {
    'pretrain_step/agcn/skeletonclr+snippet',
    'predict_step/agcn/finetune',
    'finetune_step/agcn/linear',
  }
  assert report['pipeline']['build_s'] >= 0


def test_alternating_timer_order_and_settle_calls(monkeypatch):
  """Blocks alternate a, b / b, a / a, b; each opens with ``settle`` untimed
  calls, and only the ``steps`` calls after them are timed."""
  from skel_jax import bench

  log = []
  clock = [0.0]

  def make(name):
    def call():
      log.append(name)
      clock[0] += {'a': 1.0, 'b': 10.0}[name]

    return call

  calls = {'a': make('a'), 'b': make('b')}
  monkeypatch.setattr(bench.time, 'perf_counter', lambda: clock[0])
  timed = bench.time_alternating(calls, warmup=1, repeats=3, steps=2, settle=1)
  blocks = ['a'] * 3 + ['b'] * 3 + ['b'] * 3 + ['a'] * 3
  assert log == ['a', 'b'] + blocks + ['a'] * 3 + ['b'] * 3
  assert timed['a']['times_s'] == [1.0] * 3
  assert timed['b']['times_s'] == [10.0] * 3
