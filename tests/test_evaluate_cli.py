"""ActivityNet JSON I/O, the evaluate CLI end to end, and a plot smoke test."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from skel_jax import activitynet
from skel_jax import plotting

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two GTs + three predictions (one duplicate): exact AP 5/6 for 'walk'
# (see test_metrics.test_exact_duplicate_is_false_positive); 'jump' has GT
# and no prediction (AP 0); 'run' only appears in the predictions.
GT_JSON = {
  'database': {
    'v1': {
      'annotations': [
        {'label': 'walk', 'segment': [0, 10]},
        {'label': 'walk', 'segment': [20, 30]},
        {'label': 'jump', 'segment': [40, 50]},
      ]
    },
  }
}
PRED_JSON = {
  'results': {
    'v1': [
      {'label': 'walk', 'segment': [0, 10], 'score': 0.9},
      {'label': 'walk', 'segment': [1, 10], 'score': 0.8},
      {'label': 'walk', 'segment': [20, 31], 'score': 0.7},
      {'label': 'run', 'segment': [40, 50], 'score': 0.6},
    ],
  }
}


@pytest.fixture
def files(tmp_path):
  gt, pred = tmp_path / 'gt.json', tmp_path / 'pred.json'
  gt.write_text(json.dumps(GT_JSON))
  pred.write_text(json.dumps(PRED_JSON))
  return str(gt), str(pred)


def test_label_vocabulary_gt_first_then_prediction_only():
  gt_raw = {'v': [('walk', 0, 1), ('jump', 2, 3)]}
  pred_raw = {
    'v': [('run', 0, 1, 0.5), ('walk', 0, 1, 0.5), ('air', 0, 1, 0.1)]
  }
  assert activitynet.label_vocabulary(gt_raw, pred_raw) == [
    'jump',
    'walk',
    'air',
    'run',
  ]
  # Integers sort numerically.
  assert activitynet.label_vocabulary({'v': [(10, 0, 1), (2, 0, 1)]}, {}) == [
    2,
    10,
  ]


def test_to_and_from_activitynet_round_trip(tmp_path):
  names = ['walk', 'stand']
  gt = {'a': [(0, 0, 10), (1, 10, 25)], 'b': []}
  pred = {'a': [(1, 11, 25, 0.75)]}
  gt_json = activitynet.to_activitynet(gt, names)
  assert gt_json == {
    'database': {
      'a': {
        'annotations': [
          {'label': 'walk', 'segment': [0, 10]},
          {'label': 'stand', 'segment': [10, 25]},
        ]
      },
      'b': {'annotations': []},
    }
  }
  pred_json = activitynet.to_activitynet(pred)
  assert pred_json == {
    'results': {'a': [{'label': 1, 'segment': [11, 25], 'score': 0.75}]}
  }

  gt_path, pred_path = tmp_path / 'g.json', tmp_path / 'p.json'
  activitynet.save_activitynet(str(gt_path), gt, names)
  activitynet.save_activitynet(str(pred_path), pred, names)
  assert activitynet.load_activitynet(str(gt_path)) == {
    'a': [('walk', 0, 10), ('stand', 10, 25)],
    'b': [],
  }
  assert activitynet.load_activitynet(str(pred_path)) == {
    'a': [('stand', 11, 25, 0.75)]
  }
  with pytest.raises(ValueError):
    activitynet.to_activitynet({'a': [(0, 1, 2), (0, 1, 2, 0.5)]})
  with pytest.raises(ValueError):
    activitynet.to_activitynet(gt, kind='pred')
  # Empty predictions need an explicit kind to stay a "results" file.
  assert activitynet.to_activitynet({'a': []}) == {
    'database': {'a': {'annotations': []}}
  }
  assert activitynet.to_activitynet({'a': []}, kind='pred') == {
    'results': {'a': []}
  }


def test_evaluate_files_in_process(files):
  res = activitynet.evaluate_files(*files, iou_thresholds=(0.5,))
  assert list(res['per_class']) == ['jump', 'walk']
  assert res['per_class']['walk'][0.5] == pytest.approx(500 / 6)
  assert res['per_class']['jump'][0.5] == 0
  assert res['iou'][0.5] == pytest.approx(500 / 12)
  table = activitynet.format_table(res)
  assert 'walk' in table and '83.33' in table and '41.67' in table


def test_cli_end_to_end(files, tmp_path):
  out = tmp_path / 'sub' / 'result.json'
  cmd = [
    sys.executable,
    '-m',
    'skel_jax.evaluate',
    f'--gt={files[0]}',
    f'--pred={files[1]}',
    '--metric=exact',
    '--iou=0.1,0.5',
    f'--out={out}',
  ]
  proc = subprocess.run(
    cmd, capture_output=True, text=True, cwd=_REPO, timeout=60
  )
  assert proc.returncode == 0, proc.stderr
  assert 'metric: exact' in proc.stdout and 'walk' in proc.stdout
  result = json.loads(out.read_text())
  assert result['metric'] == 'exact'
  assert set(result['iou']) == {'0.1', '0.5'}
  assert result['iou']['0.5'] == pytest.approx(500 / 12)
  assert result['mean'] == pytest.approx(500 / 12)
  assert result['per_class']['walk']['0.1'] == pytest.approx(500 / 6)
  assert result['per_class']['jump'] == {'0.1': 0.0, '0.5': 0.0}


def test_cli_pkummd_official_with_int_labels(tmp_path):
  # Integer labels; 3 classes in the denominator; class 0 perfect -> 100/3.
  gt, pred = tmp_path / 'g.json', tmp_path / 'p.json'
  activitynet.save_activitynet(str(gt), {'v': [(0, 0, 10)]})
  activitynet.save_activitynet(str(pred), {'v': [(0, 0, 10, 0.9)]})
  out = tmp_path / 'r.json'
  cmd = [
    sys.executable,
    '-m',
    'skel_jax.evaluate',
    f'--gt={gt}',
    f'--pred={pred}',
    '--metric=pkummd_official',
    '--iou=0.5',
    '--num_classes=3',
    f'--out={out}',
  ]
  proc = subprocess.run(
    cmd, capture_output=True, text=True, cwd=_REPO, timeout=60
  )
  assert proc.returncode == 0, proc.stderr
  result = json.loads(out.read_text())
  assert result['iou']['0.5'] == pytest.approx(100 / 3)
  assert list(result['per_class']) == ['0']


def test_cli_rejects_unknown_metric(files):
  cmd = [
    sys.executable,
    '-m',
    'skel_jax.evaluate',
    f'--gt={files[0]}',
    f'--pred={files[1]}',
    '--metric=bogus',
  ]
  proc = subprocess.run(
    cmd, capture_output=True, text=True, cwd=_REPO, timeout=60
  )
  assert proc.returncode != 0
  # pkummd_official without --num_classes: a usage message, not a traceback.
  cmd[-1] = '--metric=pkummd_official'
  proc = subprocess.run(
    cmd, capture_output=True, text=True, cwd=_REPO, timeout=60
  )
  assert proc.returncode != 0
  assert 'needs num_classes' in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_plot_timelines_smoke(tmp_path):
  gt = np.array([4] * 5 + [0] * 10 + [4] * 3 + [2] * 12)
  pred = np.array([4] * 6 + [0] * 8 + [1] * 3 + [2] * 13)
  rows = [
    {
      'name': 'seq_a',
      'gt': gt,
      'pred': pred,
      'segments': [(0, 6, 14, 0.8), (2, 17, 30, 0.6)],
    },
    {'name': 'seq_b', 'gt': gt[:20], 'pred': None},
  ]
  path = plotting.plot_timelines(
    str(tmp_path / 'tl.png'),
    rows,
    ['walk', 'stand', 'turn', 'jump'],
    background=4,
  )
  assert os.path.exists(path)
  with open(path, 'rb') as f:
    head = f.read(8)
  assert head == b'\x89PNG\r\n\x1a\n'
  assert os.path.getsize(path) > 1000


# ------------------------------------------------ malformed or mismatched ---
def _pred_with(tmp_path, entry):
  pred = {
    'results': {
      'v1': [{'label': 'walk', 'segment': [0, 10], 'score': 0.9}, entry]
    }
  }
  path = tmp_path / 'pred.json'
  # allow_nan: Python writes NaN/Infinity literals, as numpy-based code does.
  path.write_text(json.dumps(pred, allow_nan=True))
  return str(path)


@pytest.mark.parametrize(
  'entry,problem',
  [
    (
      {'label': 'walk', 'segment': [0, 10], 'score': float('nan')},
      'score nan is not a finite number',
    ),
    (
      {'label': 'walk', 'segment': [0, 10], 'score': float('inf')},
      'score inf is not a finite number',
    ),
    (
      {'label': 'walk', 'segment': [0, 10], 'score': '0.5'},
      "score '0.5' is not a finite number",
    ),
    (
      {'label': 'walk', 'segment': [0, 10]},
      "no 'score' (every prediction needs one)",
    ),
    (
      {'label': 'walk', 'segment': [0, 10, 0.5], 'score': 0.5},
      'segment [0, 10, 0.5] is not [start, end]',
    ),
    (
      {'label': 'walk', 'segment': [10, 2], 'score': 0.5},
      'segment [10, 2] is not [start, end]',
    ),
    (
      {'label': 'walk', 'segment': [0, float('nan')], 'score': 0.5},
      'segment [0, nan] is not [start, end]',
    ),
    ({'segment': [0, 10], 'score': 0.5}, "no 'label'"),
  ],
)
def test_malformed_prediction_names_the_entry(files, tmp_path, entry, problem):
  pred = _pred_with(tmp_path, entry)
  with pytest.raises(ValueError) as e:
    activitynet.evaluate_files(files[0], pred)
  assert str(e.value).startswith(f"{pred}: results['v1'][1]: ")
  assert problem in str(e.value)


def test_json_error_names_file_and_position(files, tmp_path):
  bad = tmp_path / 'cut.json'
  bad.write_text('{"results": {"v1": [{"label": "walk",\n "segment": [0,')
  with pytest.raises(
    ValueError,
    match=rf'^{bad}: invalid JSON at line 2, '
    r'column 16: Expecting value$',
  ):
    activitynet.evaluate_files(files[0], str(bad))
  with pytest.raises(ValueError, match='expected a prediction'):
    activitynet.evaluate_files(files[0], files[0])  # GT passed twice


def _cli(*args):
  return subprocess.run(
    [sys.executable, '-m', 'skel_jax.evaluate', *args],
    capture_output=True,
    text=True,
    cwd=_REPO,
    timeout=60,
  )


def test_cli_mismatched_ids_and_labels_warn_then_fail_with_strict(
  files, tmp_path
):
  # Integer labels against named GT classes, and one id the GT lacks: this
  # used to score 0.00 silently.
  pred = tmp_path / 'other.json'
  activitynet.save_activitynet(
    str(pred), {'v1': [(1, 0, 10, 0.9)], 'v9': [(0, 20, 30, 0.8)]}
  )
  proc = _cli(f'--gt={files[0]}', f'--pred={pred}')
  assert proc.returncode == 0, proc.stderr
  warnings = [
    l for l in proc.stderr.splitlines() if l.startswith('evaluate: warning: ')
  ]
  assert warnings == [
    'evaluate: warning: 1 of 2 predicted videos are not in the ground '
    "truth ('v9')",
    'evaluate: warning: 2 of 2 predicted labels never occur in the ground '
    'truth (0, 1); the ground truth labels are str, the predicted ones '
    'int',
  ], proc.stderr
  proc = _cli(f'--gt={files[0]}', f'--pred={pred}', '--strict')
  assert proc.returncode == 1
  assert proc.stderr.startswith('evaluate: error: ') and '(--strict)' in (
    proc.stderr
  )
  assert 'Traceback' not in proc.stderr


def test_cli_nan_score_is_one_line_error(files, tmp_path):
  pred = _pred_with(
    tmp_path, {'label': 'walk', 'segment': [0, 5], 'score': float('nan')}
  )
  proc = _cli(f'--gt={files[0]}', f'--pred={pred}')
  assert proc.returncode == 1
  assert proc.stderr.strip() == (
    f"evaluate: error: {pred}: results['v1'][1]:"
    ' score nan is not a finite number'
  )
