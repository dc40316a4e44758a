"""build_data never reuses, keeps or accepts a dataset it should not: input
fingerprints (+ --overwrite), leftovers of killed builds, empty splits with
their skip reasons, and sequences in two splits. Tiny PKU-MMD fixture trees."""

import json
import os
import shutil
import subprocess
import sys

import fixtures_pku as fx
import pytest

from data_builders import common
from skel_jax import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build(manual_dir, data_dir, overwrite=False, **kwargs):
  kwargs.setdefault('num_workers', 0)
  builder = datasets.make_builder(
    'pku_mmd', 'v1_xsub', data_dir=data_dir, **kwargs
  )
  return datasets.build(builder, manual_dir, overwrite=overwrite)


def _info_mtime(builder):
  return os.stat(
    os.path.join(builder.data_dir, 'dataset_info.json')
  ).st_mtime_ns


@pytest.fixture
def raw(tmp_path):
  root = str(tmp_path / 'raw')
  fx.write_good_tree(root)
  return root


def test_dataset_is_reused_only_for_the_same_inputs(raw, tmp_path):
  data_dir = str(tmp_path / 'data')
  built = _build(raw, data_dir)
  stamp = _info_mtime(built)
  # Same files (even moved elsewhere, times kept): reused as is.
  moved = str(tmp_path / 'moved')
  shutil.copytree(raw, moved)  # copy2 keeps sizes and mtimes
  assert _info_mtime(_build(moved, data_dir)) == stamp
  # Another tree under another manual_dir: refused, naming what differs.
  extra = os.path.join(moved, 'PKU_Skeleton_Renew', '0004-L.txt')
  shutil.copy(os.path.join(moved, 'PKU_Skeleton_Renew', '0002-L.txt'), extra)
  with open(
    os.path.join(moved, 'Train_Label_PKU_final', '0002-L.txt'), 'a'
  ) as f:
    f.write('1,20,22,1\n')
  with pytest.raises(datasets.InputsChangedError) as e:
    _build(moved, data_dir)
  msg = str(e.value)
  assert 'built from other inputs' in msg and '--overwrite' in msg
  assert f'manual_dir {raw} -> {moved}' in msg
  assert '1 file(s) added (PKU_Skeleton_Renew/0004-L.txt)' in msg
  assert (
    '1 file(s) changed size or time (Train_Label_PKU_final/0002-L.txt)'
  ) in msg
  assert _info_mtime(built) == stamp
  # Other builder options are other inputs too.
  with pytest.raises(datasets.InputsChangedError, match='builder options'):
    _build(raw, data_dir, label_dir='Train_Label_PKU_final')
  # --overwrite rebuilds from the new inputs, which then match.
  rebuilt = _build(moved, data_dir, overwrite=True)
  assert _info_mtime(rebuilt) != stamp
  with open(os.path.join(rebuilt.data_dir, datasets.INPUTS_FILE)) as f:
    assert json.load(f)['manual_dir'] == moved
  _build(moved, data_dir)


def test_cli_refuses_other_inputs_in_one_line(raw, tmp_path):
  data_dir = str(tmp_path / 'data')
  _build(raw, data_dir)
  os.remove(os.path.join(raw, 'PKU_Skeleton_Renew', '0291-L.txt'))
  cmd = [
    sys.executable,
    '-m',
    'skel_jax.build_data',
    '--dataset=pku_mmd/v1_xsub',
    f'--manual_dir={raw}',
    f'--data_dir={data_dir}',
    '--num_workers=0',
  ]
  proc = subprocess.run(
    cmd, cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  assert '1 file(s) removed (PKU_Skeleton_Renew/0291-L.txt)' in proc.stderr, (
    proc.stderr[-2000:]
  )


def test_leftovers_of_a_killed_build_are_removed(raw, tmp_path):
  data_dir = str(tmp_path / 'data')
  builder = datasets.make_builder('pku_mmd', 'v1_xsub', data_dir=data_dir)
  stale = os.path.join(
    os.path.dirname(builder.data_dir), 'incomplete.ABC123_1.0.0'
  )
  os.makedirs(stale)
  fx.write_text(os.path.join(stale, 'pku_mmd-train.array_record-00000'), 'x')
  _build(raw, data_dir)
  assert not os.path.exists(stale)
  assert [
    d
    for d in os.listdir(os.path.dirname(builder.data_dir))
    if d.startswith('incomplete')
  ] == []


def test_empty_split_reports_the_skip_reasons(raw, tmp_path):
  for vid in fx.GOOD_SPLITS['xsub']['test']:  # no test video is usable
    os.remove(os.path.join(raw, 'PKU_Skeleton_Renew', vid + '.txt'))
  data_dir = str(tmp_path / 'data')
  with pytest.raises(common.EmptySplitError) as e:
    _build(raw, data_dir)
  msg = str(e.value)
  assert "pku_mmd/v1_xsub: split 'test' has no valid example" in msg
  assert 'all 3 samples were skipped' in msg
  assert '0291-L' in msg and 'skeleton file' in msg, msg
  report = msg.rsplit('Full report: ', 1)[1].rstrip('.')
  with open(report) as f:
    assert len(json.load(f)['skipped']) == 3


def test_sequence_in_two_splits_is_an_error(raw, tmp_path):
  split = fx.GOOD_SPLITS['xsub']
  fx.write_split_file(
    os.path.join(raw, 'Split', 'cross-subject.txt'),
    split['train'],
    split['test'] + ['0002-R'],
  )
  with pytest.raises(common.DuplicateSequenceError) as e:
    _build(raw, str(tmp_path / 'data'))
  assert "sequence '0002-R' is in both the 'train' and the 'test' split" in (
    str(e.value)
  )
