"""Tests for the PKU-MMD parsers and TFDS builder on written fixture trees."""

import json
import os

import fixtures_pku as fx
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_builders import common
from data_builders.pku_mmd import pku_mmd_dataset_builder as pkub
from data_builders.pku_mmd import raw_files
from skel_jax import datasets

BG = raw_files.BACKGROUND

# Per-frame labels computed by hand from fx.GOOD_VIDEOS (rows [start, end),
# class = label - 1, background 51, the later-starting segment wins).
EXPECTED_LABELS = {
  '0002-L': [2] * 10 + [6] * 10 + [BG] * 4,
  '0002-M': [BG] * 2 + [50] * 6 + [0] * 4 + [BG] * 3,
  '0002-R': [1] * 4 + [BG] * 6 + [4] * 10,  # '5,20,10' swapped
  '0003-M': [0] * 5 + [1] * 10 + [BG] * 3 + [3] * 2,  # overlap, clipped
  '0003-R': [BG] * 3 + [19] * 3 + [11] * 3 + [BG] * 7,  # equal starts
  '0291-L': [BG] + [7] * 4 + [BG] * 7,
  '0291-M': [BG] * 2 + [8] * 4 + [9] * 7,
  '0291-R': [10] * 11,
}
# Raw rows as written; lenient builds store 0002-R's first row swapped.
EXPECTED_SEGMENTS = {
  '0002-L': [(3, 0, 10, 1), (7, 10, 20, 2)],
  '0002-M': [(51, 2, 8, 1), (1, 8, 12, 2)],
  '0002-R': [(5, 10, 20, 1), (2, 0, 4, 1)],
  '0003-M': [(1, 0, 10, 1), (2, 5, 15, 2), (4, 18, 30, 1)],
  '0003-R': [(12, 3, 9, 2), (20, 3, 6, 1)],
  '0291-L': [(8, 1, 5, 1)],
  '0291-M': [(9, 2, 6, 2), (10, 6, 13, 1)],
  '0291-R': [(11, 0, 11, 1)],
}
CONFIGS = {'v1_xsub': 'xsub', 'v1_xview': 'xview'}


@pytest.fixture(scope='module')
def good(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('pku_good'))
  return root, fx.write_good_tree(root, 'renew')


@pytest.fixture(scope='module')
def good_data_layout(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('pku_good_data'))
  return root, fx.write_good_tree(root, 'data')


@pytest.fixture(scope='module')
def bad(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('pku_bad'))
  fx.write_bad_tree(root)
  return root


def _items(root, protocol='cross_subject', strict=False):
  split_file = raw_files.find_split_file(root, protocol)
  skels, labels, _ = raw_files.index_raw_files(root)
  return {
    split: [
      raw_files.VideoItem(
        vid, skels.get(vid), labels.get(vid), split_file, line, root, strict
      )
      for vid, line in entries
    ]
    for split, entries in raw_files.parse_split_file(split_file).items()
  }


def _read_all(data_dir, split):
  source = tfds.builder_from_directory(data_dir).as_data_source(split)
  out = {}
  for i in range(len(source)):
    ex = source[i]
    out[ex['sequence_id'].decode()] = ex
  return out


def _report(data_dir, split):
  with open(os.path.join(data_dir, f'skipped_{split}.json')) as f:
    return json.load(f)


# ----------------------------------------------------------- class names ---
def test_class_names():
  names = raw_files.class_names()
  assert len(names) == 51 == raw_files.NUM_CLASSES == BG
  assert names[0] == 'bow' and names[50] == 'writing'
  assert names[21] == 'pickup' and len(set(names)) == 51


# ----------------------------------------------------------- split files ---
def test_real_cross_subject_file():
  # Verbatim copy of JHang2020/Simple-Skeleton-Detection tools/
  # pkuv1_cross_subject.txt shipped with the package (README.md).
  path = os.path.join(
    os.path.dirname(raw_files.__file__), 'pkuv1_cross_subject.txt'
  )
  splits = raw_files.parse_split_file(path)
  train = [v for v, _ in splits['train']]
  test = [v for v, _ in splits['test']]
  assert (len(train), len(test)) == (944, 132)
  assert {line for _, line in splits['train']} == {2}
  assert {line for _, line in splits['test']} == {4}
  assert test == [f'{i:04d}-{v}' for i in range(291, 335) for v in 'LMR']
  every = {f'{i:04d}-{v}' for i in range(2, 365) for v in 'LMR'}
  missing = every - set(train) - set(test)
  assert missing == {'0060-L'} | {
    f'{i:04d}-{v}' for i in range(247, 251) for v in 'LMR'
  }


@pytest.mark.parametrize('layout_fixture', ['good', 'good_data_layout'])
@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_split_assignment(request, layout_fixture, config):
  root, _ = request.getfixturevalue(layout_fixture)
  protocol = {'v1_xsub': 'cross_subject', 'v1_xview': 'cross_view'}[config]
  path = raw_files.find_split_file(root, protocol)
  assert os.path.basename(path) in raw_files.SPLIT_FILE_NAMES[protocol]
  splits = raw_files.parse_split_file(path)
  expected = fx.GOOD_SPLITS[CONFIGS[config]]
  assert {k: [v for v, _ in entries] for k, entries in splits.items()} == (
    expected
  )
  # Every fixture video is in exactly one split of each protocol.
  assert sorted(expected['train'] + expected['test']) == sorted(fx.GOOD_VIDEOS)


def test_split_file_errors(tmp_path):
  path = str(tmp_path / 'cross-view.txt')
  cases = [
    ('Training videos: \n0002-L, \n', None, '4 lines'),
    ('Train: \n0002-L, \nValidataion videos: \n0003-L,\n', 1, 'Training'),
    (
      'Training videos: \n0002-L, \nValidation list\n0003-L,\n',
      3,
      'Validataion',
    ),
    (
      'Training videos: \n0002-L, 0002 M, \nValidataion videos: \n0003-L\n',
      2,
      'video ids',
    ),
    ('Training videos: \n0002-L, \nTest videos: \n0003-L, 0003-L\n', 4, 'once'),
  ]
  for text, line, what in cases:
    fx.write_text(path, text)
    with pytest.raises(common.RawFormatError, match=what) as err:
      raw_files.parse_split_file(path)
    where = f'{path}:{line}:' if line else f'{path}:'
    assert str(err.value).startswith(where), str(err.value)


def test_missing_split_file_names_what_was_searched(good, tmp_path):
  fx.write_text(
    str(tmp_path / 'Split' / 'cross-subject.txt'),
    'Training videos: \n0002-L, \nValidataion videos: \n0291-L,',
  )
  with pytest.raises(FileNotFoundError) as err:
    raw_files.find_split_file(str(tmp_path), 'cross_view')
  msg = str(err.value)
  assert 'cross-view.txt' in msg and 'cross_view.txt' in msg
  assert str(tmp_path) in msg


# ------------------------------------------------------------ raw files ----
def test_index_finds_both_layouts(good, good_data_layout, tmp_path):
  for root, written in (good, good_data_layout):
    skels, labels, dups = raw_files.index_raw_files(root)
    assert skels == {v: w['skeleton_path'] for v, w in written.items()}
    assert labels == {v: w['label_path'] for v, w in written.items()}
    assert not dups
  # Explicit folders override the name-based search.
  root, written = good
  skels, labels, _ = raw_files.index_raw_files(
    root,
    skeleton_dir='PKU_Skeleton_Renew',
    label_dir=os.path.join(root, 'Train_Label_PKU_final'),
  )
  assert set(skels) == set(labels) == set(written)


def test_parsed_skeleton_equals_written(good, good_data_layout):
  for _, written in (good, good_data_layout):
    for vid, w in written.items():
      skeleton = raw_files.parse_skeleton(w['skeleton_path'])
      spec = fx.GOOD_VIDEOS[vid]
      assert skeleton.dtype == np.float32
      assert skeleton.shape == (spec['frames'], 2, 25, 3)
      np.testing.assert_array_equal(skeleton, w['skeleton'])
      if spec['persons'] == 1:
        assert not skeleton[:, 1].any()
      for t in spec.get('zero_frames', ()):
        assert not skeleton[t].any()
  # Person/joint order: value k of a line is person k//75, joint k%75//3.
  vid, w = '0002-M', good[1]['0002-M']
  with open(w['skeleton_path']) as f:
    first = [float(x) for x in f.readline().split()]
  skeleton = raw_files.parse_skeleton(w['skeleton_path'])
  assert skeleton[0, 1, 24, 2] == np.float32(first[149])
  assert skeleton[0, 0, 3, 1] == np.float32(first[10])
  assert len(first) == 175, vid


def test_skeleton_parser_edge_cases(tmp_path):
  path = str(tmp_path / 'Skeleton' / '0005-L.txt')
  row = ' '.join(['0.5'] * 150)
  cases = [
    ([row, '', row], 2, 'at least 150'),  # blank line inside the file
    ([row, row.replace('0.5', '1e39', 1)], 2, 'finite float32'),
    ([row, row + ' x y', ' ' + row[:-4]], 3, 'at least 150'),
  ]
  for lines, line, what in cases:
    fx.write_text(path, '\n'.join(lines) + '\n\n')
    with pytest.raises(common.RawFormatError, match=what) as err:
      raw_files.parse_skeleton(path)
    assert str(err.value).startswith(f'{path}:{line}:'), str(err.value)
  fx.write_text(path, '\n'.join([row, ' ' + row + ' x y']) + '\n\n\n')
  assert raw_files.parse_skeleton(path).shape == (2, 2, 25, 3)


def test_raw_segments_and_frame_labels(good):
  for vid, w in good[1].items():
    segments, notes = raw_files.parse_labels(w['label_path'], strict=False)
    assert segments.dtype == np.int32
    assert segments.tolist() == [list(s) for s in EXPECTED_SEGMENTS[vid]]
    assert bool(notes) == (vid == '0002-R')
    labels, frame_notes = raw_files.frame_labels(
      segments, fx.GOOD_VIDEOS[vid]['frames']
    )
    assert labels.dtype == np.int32
    assert labels.tolist() == EXPECTED_LABELS[vid], vid
    assert bool(frame_notes) == (vid in ('0003-M', '0003-R'))
  _, notes = raw_files.parse_labels(
    good[1]['0002-R']['label_path'], strict=False
  )
  assert 'start 20 > end 10, swapped' in notes[0]
  assert notes[0].startswith(good[1]['0002-R']['label_path'] + ':1:')


def test_frame_convention_round_trips_segments():
  # Half-open [start, end): run-length decoding gives back the file numbers.
  from skel_jax import postprocess

  segments = np.array([(3, 0, 10, 1), (7, 12, 20, 2)], np.int32)
  labels, _ = raw_files.frame_labels(segments, 25)
  runs = postprocess.labels_to_segments(labels, background=BG)
  assert [tuple(map(int, r)) for r in runs] == [(2, 0, 10), (6, 12, 20)]
  assert raw_files.FRAME_CONVENTION == 'zero_based_half_open'


@pytest.mark.parametrize(
  'vid', [v for v, (_, f, _, _) in fx.BAD_VIDEOS.items() if f is not None]
)
def test_strict_errors_name_file_and_line(bad, vid):
  _, rel, line, what = fx.BAD_VIDEOS[vid]
  items = {
    it.video_id: it for its in _items(bad, strict=True).values() for it in its
  }
  with pytest.raises(common.RawFormatError) as err:
    raw_files.convert_video(items[vid])
  where = os.path.join(bad, rel.format(vid))
  where += f':{line}:' if line else ':'
  assert str(err.value).startswith(where + ' expected'), str(err.value)
  assert what in str(err.value)
  assert err.value.line == line


def test_convert_parallel_workers_agree(bad):
  items = _items(bad)['train']
  results = {}
  for workers in (0, 2):
    report = pkub.PkuReport('pku_mmd/test', 'train')
    out = list(
      common.convert_parallel(
        raw_files.convert_video,
        items,
        strict=False,
        report=report,
        num_workers=workers,
      )
    )
    results[workers] = (
      [i.video_id for i, _ in out],
      report.skipped,
      [ex['labels'].tolist() for _, ex in out],
    )
  assert results[0] == results[2]
  kept = [
    v
    for v, (act, *_) in fx.BAD_VIDEOS.items()
    if act == 'keep' and v in fx.BAD_SPLITS['train']
  ]
  assert results[2][0] == kept


# ------------------------------------------------------------ TFDS build ---
def _build(manual_dir, data_dir, config='v1_xsub', **kwargs):
  kwargs.setdefault('strict', False)
  kwargs.setdefault('num_workers', 0)
  builder = datasets.make_builder(
    'pku_mmd', config, data_dir=data_dir, **kwargs
  )
  return datasets.build(builder, manual_dir)


@pytest.mark.parametrize(
  'config,layout_fixture',
  [('v1_xsub', 'good'), ('v1_xview', 'good_data_layout')],
)
def test_tfds_build_and_read(request, tmp_path, config, layout_fixture):
  root, written = request.getfixturevalue(layout_fixture)
  builder = _build(root, str(tmp_path), config)
  data_dir = builder.data_dir
  reader = tfds.builder_from_directory(data_dir)
  names = list(reader.info.metadata['class_names'])
  assert names == raw_files.class_names() + ['background'] and len(names) == 52
  assert reader.info.metadata['frame_convention'] == 'zero_based_half_open'
  for split, vids in fx.GOOD_SPLITS[CONFIGS[config]].items():
    examples = _read_all(data_dir, split)
    assert sorted(examples) == sorted(vids)
    for vid, ex in examples.items():
      t = fx.GOOD_VIDEOS[vid]['frames']
      assert int(ex['num_frames']) == t and ex['view'].decode() == vid[-1]
      np.testing.assert_array_equal(ex['skeleton'], written[vid]['skeleton'])
      assert ex['labels'].dtype == np.int32
      assert ex['labels'].tolist() == EXPECTED_LABELS[vid]
      assert ex['segments'].tolist() == [
        list(s) for s in EXPECTED_SEGMENTS[vid]
      ]
    # Reports written during generation end up in the final folder.
    report = _report(data_dir, split)
    assert report['skipped'] == [] and report['converted'] == len(vids)
  leftovers = [
    p
    for p in os.listdir(os.path.dirname(data_dir))
    if p.startswith('incomplete')
  ]
  assert not leftovers
  notes = _report(data_dir, 'train')['notes']
  noted = {n['sample'] for n in notes}
  assert {'0002-R', '0003-M', '0003-R'} <= noted


def test_tfds_build_lenient_bad_tree(bad, tmp_path):
  builder = _build(bad, str(tmp_path), num_workers=2)
  for split, vids in fx.BAD_SPLITS.items():
    examples = _read_all(builder.data_dir, split)
    kept = [v for v in vids if fx.BAD_VIDEOS[v][0] == 'keep']
    assert sorted(examples) == sorted(kept)
    report = _report(builder.data_dir, split)
    assert report['converted'] == len(kept)
    skipped = {s['sample']: s['reason'] for s in report['skipped']}
    assert sorted(skipped) == sorted(set(vids) - set(kept))
    for vid, reason in skipped.items():
      _, rel, line, what = fx.BAD_VIDEOS[vid]
      where = os.path.join(bad, rel.format(vid)) + (
        f':{line}:' if line else ':'
      )
      assert reason.startswith(where) and what in reason, reason
  train = _read_all(builder.data_dir, 'train')
  assert train['0012-M']['segments'].tolist() == [[1, 0, 4, 1], [2, 4, 8, 2]]
  empty = _read_all(builder.data_dir, 'test')['0291-R']
  assert empty['segments'].shape == (0, 4)
  assert (empty['labels'] == BG).all()
  notes = {
    n['sample']: n['note']
    for split in fx.BAD_SPLITS
    for n in _report(builder.data_dir, split)['notes']
  }
  assert 'swapped' in notes['0012-M'] and 'no segments' in notes['0291-R']


def test_tfds_build_strict_raises_on_first_bad_file(bad, tmp_path):
  with pytest.raises(common.RawFormatError) as err:
    _build(bad, str(tmp_path), strict=True)
  path = os.path.join(bad, fx.SKEL.format('0010-M'))
  assert str(err.value).startswith(f'{path}:4: expected at least 150')
  builder = datasets.make_builder('pku_mmd', 'v1_xsub', data_dir=str(tmp_path))
  assert not os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json'))


def test_tfds_build_missing_split_file(good, tmp_path):
  root = str(tmp_path / 'raw')
  fx.write_good_tree(root, 'renew')
  os.remove(os.path.join(root, 'Split', 'cross-view.txt'))
  with pytest.raises(FileNotFoundError, match='cross_view.txt'):
    _build(root, str(tmp_path / 'data'), 'v1_xview')


def test_interrupted_build_reruns(good, tmp_path, monkeypatch):
  root, written = good
  data_dir = str(tmp_path)
  real = raw_files.convert_video
  calls = []

  def dies_halfway(item):
    calls.append(item.video_id)
    if len(calls) == 3:
      raise KeyboardInterrupt  # like Ctrl-C in the middle of the train split
    return real(item)

  monkeypatch.setattr(raw_files, 'convert_video', dies_halfway)
  with pytest.raises(KeyboardInterrupt):
    _build(root, data_dir)
  monkeypatch.setattr(raw_files, 'convert_video', real)
  builder = datasets.make_builder('pku_mmd', 'v1_xsub', data_dir=data_dir)
  assert not os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json'))
  # A hard kill leaves TFDS's temporary folder behind; a rerun ignores it.
  stale = os.path.join(
    os.path.dirname(builder.data_dir), 'incomplete.ABC123_1.0.0'
  )
  os.makedirs(stale)
  fx.write_text(
    os.path.join(stale, 'pku_mmd-train.array_record-00000-of-00001'), 'partial'
  )
  builder = _build(root, data_dir)
  for split, vids in fx.GOOD_SPLITS['xsub'].items():
    assert sorted(_read_all(builder.data_dir, split)) == sorted(vids)
  ex = _read_all(builder.data_dir, 'train')['0002-L']
  np.testing.assert_array_equal(ex['skeleton'], written['0002-L']['skeleton'])


def test_make_builder_options(tmp_path):
  builder = datasets.make_builder(
    'pku_mmd',
    'v1_xview',
    data_dir=str(tmp_path),
    strict=True,
    num_workers=3,
    skeleton_dir='S',
    label_dir='L',
  )
  assert builder.name == 'pku_mmd'
  assert builder.builder_config.protocol == 'cross_view'
  assert (builder._strict, builder._num_workers) == (True, 3)
  with pytest.raises(ValueError, match='options'):
    datasets.make_builder(
      'pku_mmd', 'v1_xsub', data_dir=str(tmp_path), smplh_model='x'
    )
