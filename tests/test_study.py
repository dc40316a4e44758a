"""The multi-seed study: interval arithmetic against hand-worked values, and a
smoke study end to end (cells, re-run reuse, results schema)."""

import json
import os

import numpy as np
import pytest

import configs
from skel_jax import study


def test_mean_ci_hand_worked():
  # mean 2, sd 1, n 3: half-width t(2) * 1 / sqrt(3) = 4.303 / 1.732.
  got = study.mean_ci([1.0, 2.0, 3.0])
  assert got['mean'] == 2.0
  np.testing.assert_allclose(got['ci95'], [2 - 2.4843, 2 + 2.4843], atol=1e-3)
  np.testing.assert_allclose(got['sd'], 1.0)


def test_t_quantile_table_and_tail():
  assert study.t_quantile(8) == 2.306
  # Beyond the table: within 0.3% of the exact 2.0 (df 60) and 1.98 (df 120).
  np.testing.assert_allclose(study.t_quantile(60), 2.000, rtol=3e-3)
  np.testing.assert_allclose(study.t_quantile(120), 1.980, rtol=3e-3)


def test_aggregate_pairs_by_seed_and_protocol():
  cells = []
  for p in (0, 1):
    for l in (5, 6):
      base = 10.0 * p + l
      for method, offset in (('video_moco', 0.0), ('snippet_moco', 2.0 + p)):
        cells.append(
          {
            'method': method,
            'protocol': 'linear',
            'pretrain_seed': p,
            'localization_seed': l,
            'map_mean': base + offset,
          }
        )
  rows = study.aggregate(cells, ['video_moco', 'snippet_moco'], ['linear'], 0.2)
  video, snippet = rows
  assert video['method'] == 'video_moco' and 'vs_video_moco' not in video
  assert video['runs'] == 4
  np.testing.assert_allclose(video['map_mean']['mean'], np.mean([5, 6, 15, 16]))
  # Paired differences are 2, 2, 3, 3: mean 2.5, sd 0.577, t(3) = 3.182.
  d = snippet['vs_video_moco']
  np.testing.assert_allclose(d['mean'], 2.5)
  half = 3.182 * np.std([2, 2, 3, 3], ddof=1) / 2
  np.testing.assert_allclose(d['ci95'], [2.5 - half, 2.5 + half], rtol=1e-6)
  assert d['pairs'] == 4


def test_study_variants_keep_their_budgets():
  # The gpu variant's 2000 steps were once overwritten by the CPU's 150.
  steps = {
    v: {p.num_steps for p in configs.load('study', v).pretrain_methods.values()}
    for v in (None, 'gpu', 'smoke')
  }
  assert steps == {None: {150}, 'gpu': {2000}, 'smoke': {10}}


def test_more_seeds_only_adds_seeds_to_the_default():
  # It runs in the default study's workdir and reuses its cells as they
  # are, so everything but the seed lists must be the default's.
  default, more = (
    configs.load('study', None),
    configs.load('study', 'more_seeds'),
  )
  assert set(default.pretrain_seeds) <= set(more.pretrain_seeds)
  assert set(default.localization_seeds) < set(more.localization_seeds)
  assert len(more.pretrain_seeds) * len(more.localization_seeds) >= 18
  for protocol in more.protocols:
    seeds = study.localization_seeds(more, protocol)
    assert set(more.localization_seeds) <= set(seeds)
  strip = lambda c: {
    k: v
    for k, v in c.to_dict().items()
    if k
    not in (
      'pretrain_seeds',
      'localization_seeds',
      'protocol_localization_seeds',
    )
  }
  assert strip(more) == strip(default)


def test_protocol_seeds_choose_the_cells_that_run(tmp_path, monkeypatch):
  # No training: the two run functions are replaced by recorders, so this
  # checks only which cells the driver runs and how it reports them.
  config = configs.load('study', 'smoke')
  config.data.dir = str(tmp_path / 'tfds')
  config.protocols = ('linear', 'finetune')
  config.protocol_localization_seeds.finetune = (5, 6, 9)
  ran = []

  def fake_localize(config, workdir, method, p_seed, l_seed, protocol):
    ran.append((method, protocol, p_seed, l_seed))
    return {'mean': 10.0 + l_seed, 'iou': {0.5: 1.0}, 'frame_accuracy': 0.5}, 0

  monkeypatch.setattr(study, '_run_pretrain', lambda *a: ({'final': {}}, True))
  monkeypatch.setattr(study, '_run_localize', fake_localize)
  monkeypatch.setattr(study.input_pipeline, 'ensure_built', lambda c: None)
  out = study.run(config, str(tmp_path / 'study'))
  expected = {
    (m, p, 0, l)
    for m in config.methods
    for p, seeds in (('linear', (5, 6)), ('finetune', (5, 6, 9)))
    for l in seeds
  }
  assert sorted(ran) == sorted(expected)
  runs = {(r['method'], r['protocol']): r['runs'] for r in out['rows']}
  assert runs == {
    (m, p): 3 if p == 'finetune' else 2
    for m in config.methods
    for p in config.protocols
  }
  assert out['seeds']['localization_by_protocol'] == {
    'linear': [5, 6],
    'finetune': [5, 6, 9],
  }


def test_loss_trend_starts_once_the_queue_is_full():
  # 30 logged steps, windows of 3: the queue fills at step 3; steps 1-2
  # (partial queue, low loss) must not count as the start.
  loss = [1.0, 1.0] + [6.0, 6.2, 6.4] + [5.5] * 22 + [5.0, 5.2, 5.4]
  logged = [
    {'step': i + 1, 'loss_global': v, 'diag/queue_fill': min(1.0, (i + 1) / 3)}
    for i, v in enumerate(loss)
  ]
  got = study.loss_trend(logged)
  assert got['window_steps'] == 3
  assert got['full_queue_start'][:2] == [3, 5]
  np.testing.assert_allclose(got['full_queue_start'][2], 6.2)
  assert got['end'][:2] == [28, 30]
  np.testing.assert_allclose(got['end'][2], 5.2)
  assert got['falls']
  rising = [dict(r, loss_global=r['step'] * 0.1) for r in logged]
  assert not study.loss_trend(rising)['falls']


@pytest.mark.xdist_group('study_smoke')
def test_smoke_study_end_to_end(tmp_path, capsys):
  config = configs.load('study', 'smoke')
  data_dir = str(tmp_path / 'tfds')
  for c in [config, config.finetune] + list(config.pretrain_methods.values()):
    c.data.dir = data_dir
  workdir = str(tmp_path / 'study')
  out = study.run(config, workdir)
  methods = list(config.methods)
  protocols = list(config.protocols)
  runs = len(config.pretrain_seeds) * len(config.localization_seeds)
  assert [(r['method'], r['protocol']) for r in out['rows']] == [
    (m, p) for p in protocols for m in methods
  ]
  for r in out['rows']:
    assert r['runs'] == runs
    lo, hi = r['map_mean']['ci95']
    assert 0.0 <= r['map_mean']['mean'] <= 100.0
    assert lo <= r['map_mean']['mean'] <= hi
    assert ('vs_video_moco' in r) == (r['method'] != 'video_moco')
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['ci_method'] == study.CI_METHOD
  assert os.path.exists(os.path.join(workdir, 'results.png'))
  assert os.path.exists(os.path.join(workdir, 'results.md'))
  # Every pretraining run logged the diagnostics and wrote the probe.
  pretrained = [m for m in methods if m != 'random_init']
  for m in pretrained:
    for s in config.pretrain_seeds:
      pdir = study.pretrain_dir(workdir, m, s)
      with open(os.path.join(pdir, 'probe.json')) as f:
        probe = json.load(f)
      assert 0.0 <= probe['var_time'] <= 1.0
      with open(os.path.join(pdir, 'metrics.jsonl')) as f:
        first = json.loads(f.readline())
      assert 'diag/global_top1' in first and 'diag/uniform' in first
  for runs_of_method in out['pretraining'].values():
    for summary in runs_of_method:
      assert summary['loss_global_trend']['window_steps'] >= 3
  # A re-run reuses every finished cell and gives the same rows.
  capsys.readouterr()
  again = study.run(config, workdir)
  log = capsys.readouterr().out
  n_runs = len(pretrained) * len(config.pretrain_seeds) + runs * len(
    methods
  ) * len(protocols)
  assert log.count(': reused') == n_runs
  assert (out['reused_runs'], again['reused_runs']) == (0, n_runs)
  assert again['rows'] == out['rows']
