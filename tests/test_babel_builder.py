"""Tests for the BABEL builder: subsampling, paths, npz/json validation, labels,
and whole TFDS builds on a tiny synthetic release."""

import json
import os
import re

import fixtures_babel as fb
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_builders import common
from data_builders.babel import amass
from data_builders.babel import babel_dataset_builder as bdb
from data_builders.babel import smplh
from skel_jax import datasets

_SEL_100 = [
  0,
  3,
  6,
  10,
  13,
  16,
  20,
  23,
  26,
  30,
  33,
  36,
  40,
  43,
  46,
  50,
  53,
  56,
  60,
  63,
  66,
  70,
  73,
  76,
  80,
  83,
  86,
  90,
  93,
  96,
]
_SEL_59 = [0] + list(range(1, 58, 2))  # floor(1.9999996 k): 0, 1, 3, ..., 57
_SEL_250 = [
  0,
  8,
  16,
  25,
  33,
  41,
  50,
  58,
  66,
  75,
  83,
  91,
  100,
  108,
  116,
  125,
  133,
  141,
  150,
  158,
  166,
  175,
  183,
  191,
  200,
  208,
  216,
  225,
  233,
  241,
]


# ---------------------------------------------------------------------------
# 30-fps subsampling (BABEL _subsample_to_30fps), hand-computed.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
  'fps,num_frames,want',
  [
    (120.0, 10, [0, 4, 8]),
    (120.0, 13, [0, 4, 8, 12]),
    (100.0, 205, _SEL_100 + [100 + s for s in _SEL_100] + [200, 203]),
    (60.0, 7, [0, 2, 4, 6]),
    (150.0, 11, [0, 5, 10]),
    # int(59.99) = 59: 59-frame "seconds" with the irregular pattern.
    (
      59.9999885559082,
      130,
      _SEL_59 + [59 + s for s in _SEL_59] + [118, 119, 121, 123, 125, 127, 129],
    ),
    (250.0, 260, _SEL_250 + [250, 258]),
    # int(120.00004) % 30 == 0: arange with the first step cast to int = 4.
    (120.00004577636719, 10, [0, 4, 8]),
    (120.00004577636719, 8, [0, 4]),
    (120.00004577636719, 4001, list(range(0, 4001, 4))),
  ],
)
def test_subsample_indices(fps, num_frames, want):
  got = amass.subsample_indices(num_frames, fps)
  assert got.tolist() == want


# ---------------------------------------------------------------------------
# Paths and npz validation.
# ---------------------------------------------------------------------------
def test_candidate_paths_cover_the_documented_layouts():
  c = amass.candidate_paths('BMLrub/BioMotionLab_NTroje/rub001/a_poses.npz')
  assert c[0] == 'BMLrub/BioMotionLab_NTroje/rub001/a_poses.npz'
  assert 'BioMotionLab_NTroje/rub001/a_poses.npz' in c  # TAL: drop first
  assert 'BMLrub/rub001/a_poses.npz' in c  # BABEL's folder name
  c = amass.candidate_paths('DFaust/DFaust/50002/b.npz')
  assert {'DFaust/50002/b.npz', 'DFaust_67/50002/b.npz'} <= set(c)
  assert amass.candidate_paths('CMU/CMU/01/x.npz') == [
    'CMU/CMU/01/x.npz',
    'CMU/01/x.npz',
  ]


def test_resolve_errors_name_the_file(tmp_path):
  with pytest.raises(common.RawFormatError, match='CMU/CMU/9/x.npz.*no such'):
    amass.resolve('CMU/CMU/9/x.npz', [str(tmp_path)])
  with pytest.raises(common.RawFormatError, match=r'without "\.\."'):
    amass.resolve('CMU/../../etc/x.npz', [str(tmp_path)])


def _npz_error(path):
  with pytest.raises(common.RawFormatError) as e:
    amass.read_npz(str(path))
  msg = str(e.value)
  assert str(path) in msg and 'expected' in msg
  return msg


@pytest.mark.parametrize(
  'kwargs,needle',
  [
    (dict(mocap_framerate=np.array(0.0)), "'mocap_framerate'.*\\[30, 1000\\]"),
    (dict(mocap_framerate=np.array(-120.0)), '\\[30, 1000\\].*-120'),
    (dict(mocap_framerate=np.array(1e6)), '\\[30, 1000\\]'),
    (dict(mocap_framerate=np.array(np.nan)), '\\[30, 1000\\].*nan'),
    (dict(mocap_framerate=np.array([120.0, 60.0])), 'numeric scalar'),
    (dict(drop=('poses',)), "key 'poses'.*SMPL-H axis-angle.*found"),
    (dict(drop=('mocap_framerate',)), "key 'mocap_framerate'"),
    (dict(poses=np.zeros((10, 165))), r'\(T >= 1, 156\).*\(10, 165\)'),
    (dict(poses=np.zeros((0, 156))), r'\(T >= 1, 156\)'),
  ],
)
def test_bad_npz_files(tmp_path, kwargs, needle):
  kwargs = dict(kwargs)
  drop = kwargs.pop('drop', ())
  poses = kwargs.pop('poses', np.zeros((10, 156)))
  fps = kwargs.pop('mocap_framerate', np.array(120.0))
  path = fb.write_amass(tmp_path / 'a' / 'x.npz', poses, fps, drop=drop)
  msg = _npz_error(path)
  assert re.search(needle, msg), msg


def test_nan_and_unreadable_npz(tmp_path):
  poses = np.zeros((10, 156))
  poses[3, 7] = np.nan
  msg = _npz_error(fb.write_amass(tmp_path / 'a' / 'n.npz', poses, 120.0))
  assert 'finite' in msg and 'frame 3' in msg
  junk = tmp_path / 'junk.npz'
  junk.write_bytes(b'\x00garbage')
  assert 'readable AMASS .npz' in _npz_error(junk)
  good = fb.write_amass(tmp_path / 'a' / 'g.npz', np.zeros((50, 156)), 60.0)
  cut = tmp_path / 'cut.npz'
  cut.write_bytes(open(good, 'rb').read()[:300])
  assert 'readable' in _npz_error(cut)


# ---------------------------------------------------------------------------
# BABEL json.
# ---------------------------------------------------------------------------
def test_release_file_errors(tmp_path):
  with pytest.raises(common.RawFormatError, match='train.json.*no file'):
    bdb.load_release(str(tmp_path / 'train.json'))
  bad = tmp_path / 'val.json'
  bad.write_text('{"1": {\n  "babel_sid": 1,,\n}}')
  with pytest.raises(common.RawFormatError, match=r'val.json:2: .*valid JSON'):
    bdb.load_release(str(bad))


@pytest.mark.parametrize(
  'mutate,needle',
  [
    (
      lambda e: e['frame_ann']['labels'][1].update(start_t=2.0, end_t=1.0),
      r"\['12'\]\.frame_ann\.labels\[1\]: expected end_t >= start_t",
    ),
    (
      lambda e: e['frame_ann']['labels'][0].pop('start_t'),
      r"labels\[0\]: expected field 'start_t'",
    ),
    (
      lambda e: e['frame_ann']['labels'][0].pop('act_cat'),
      r"labels\[0\]: expected field 'act_cat'",
    ),
    (
      lambda e: e['frame_ann']['labels'][0].update(end_t='3'),
      r'labels\[0\]\.end_t: expected a finite number',
    ),
    (
      lambda e: e['frame_ann']['labels'][0].update(act_cat='walk'),
      r'act_cat: expected null or a list',
    ),
    (lambda e: e.pop('feat_p'), r"\['12'\]: expected field 'feat_p'"),
    (lambda e: e.update(dur=-1.0), r'\.dur: expected a positive duration'),
    (lambda e: e['frame_ann'].pop('labels'), r'frame_ann: expected null or'),
  ],
)
def test_bad_json_entries_name_file_and_field(mutate, needle):
  e = fb.entry(
    12,
    'CMU/CMU/01/01_01_poses.npz',
    3.0,
    [(['walk'], 0.0, 1.0), (['turn'], 1.0, 3.0)],
  )
  mutate(e)
  with pytest.raises(common.RawFormatError, match=needle) as err:
    bdb.parse_entry('/r/train.json', '12', e)
  assert str(err.value).startswith('/r/train.json:')


def test_parse_entry_accepts_integer_times_and_null_frame_ann():
  seq = bdb.parse_entry(
    't.json',
    '5',
    fb.entry(5, 'a/b/c/d.npz', 3.83, [(['jump'], 1, 2), (None, 0, 3.834)]),
  )
  assert seq.sid == '5' and seq.dur == 3.83
  assert seq.segments == (
    bdb.Segment(('jump',), 1.0, 2.0),
    bdb.Segment((), 0.0, 3.834),
  )
  assert (
    bdb.parse_entry(
      't.json', '5', fb.entry(5, 'a/b/c/d.npz', 2.0, [], frame_ann=False)
    ).segments
    is None
  )
  assert bdb.num_label_frames(3.83) == 114  # int(114.9)


# ---------------------------------------------------------------------------
# Per-frame labels.
# ---------------------------------------------------------------------------
def _segs(*specs):
  return tuple(bdb.Segment(tuple(c), float(s), float(e)) for c, s, e in specs)


def test_subset_labels_overlaps_gaps_and_boundaries():
  classes = bdb.SUBSET_CLASSES[1]  # walk, stand, turn, jump
  segs = _segs(
    (['walk'], 0, 1),  # frames 0..29
    (['turn', 'hand movements'], 0.5, 1.5),  # 15..44
    (['stand'], 1.2, 1.5),  # 36..44: stand beats turn
    (['dance'], 1.5, 2),  # not a subset class: background
    (['jump'], 2, 5.0),
  )  # end_t past dur
  n = bdb.num_label_frames(2.5)
  labels = bdb.subset_labels(segs, n, classes)
  want = np.array([0] * 30 + [2] * 6 + [1] * 9 + [4] * 15 + [3] * 15)
  assert labels.dtype == np.int32 and labels.shape == (75,)
  np.testing.assert_array_equal(labels, want)
  # Integer boundaries: start 1 includes frame 30 (t = 1.0), end 2 excludes 60.
  one = bdb.subset_labels(_segs((['jump'], 1, 2)), 70, classes)
  assert one[29] == 4 and one[30] == 3 and one[59] == 3 and one[60] == 4


def test_tie_rule_is_lowest_index_whatever_the_order():
  classes = bdb.SUBSET_CLASSES[3]  # jog, wave, dance, gesture
  a = _segs((['gesture', 'dance', 'wave'], 0, 1), (['jog'], 0.5, 1))
  b = _segs((['jog'], 0.5, 1), (['wave', 'gesture', 'dance'], 0, 1))
  la, lb = (bdb.subset_labels(s, 30, classes) for s in (a, b))
  np.testing.assert_array_equal(la, lb)
  np.testing.assert_array_equal(la, [1] * 15 + [0] * 15)


def test_full_multi_hot():
  names = bdb.category_names()
  assert len(names) == 150 and names[0] == 'walk' and names[149] == 'flail arms'
  segs = _segs((['walk', 'wave'], 0, 1), (['t pose', 'not a category'], 0.5, 2))
  hot = bdb.category_multi_hot(segs, 45)
  assert hot.dtype == np.uint8 and hot.shape == (45, 150)
  walk, wave, tpose = (names.index(c) for c in ('walk', 'wave', 't pose'))
  assert hot[:, walk].tolist() == [1] * 30 + [0] * 15
  assert hot[:, wave].tolist() == [1] * 30 + [0] * 15
  assert hot[:, tpose].tolist() == [0] * 15 + [1] * 30
  assert hot.sum() == 30 + 30 + 30


def test_subset_classes_are_babel_categories():
  for classes in bdb.SUBSET_CLASSES.values():
    assert set(classes) <= set(bdb.category_names())


# ---------------------------------------------------------------------------
# Per-sequence conversion.
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
  return str(fb.write_model(tmp_path_factory.mktemp('model') / 'm.pkl'))


def _task(root, feat_p, model_path, n, max_frames=1000):
  return amass.SequenceTask(
    sid='1',
    feat_p=feat_p,
    roots=(str(root),),
    model_path=model_path,
    num_label_frames=n,
    max_frames=max_frames,
  )


def test_convert_sequence_lengths_and_long_drop(tmp_path, model_path):
  poses = fb.random_poses(2100, seed=1)  # 35 s at 60 fps -> 1050 frames
  fb.write_amass(tmp_path / 'D/D/s/long.npz', poses, 60.0)
  res = amass.convert_sequence(
    _task(tmp_path, 'D/D/s/long.npz', model_path, 1020)
  )
  assert res.skeleton is None and '1020 frames' in res.dropped
  res = amass.convert_sequence(
    _task(tmp_path, 'D/D/s/long.npz', model_path, 1020, None)
  )
  assert res.skeleton.shape == (1020, 25, 3) and res.dropped is None
  # The annotation outlasts the mocap: capped at the 30-fps skeleton.
  fb.write_amass(tmp_path / 'D/D/s/short.npz', poses[:200], 100.0)
  res = amass.convert_sequence(
    _task(tmp_path, 'D/D/s/short.npz', model_path, 90)
  )
  assert res.skeleton.shape == (60, 25, 3) and res.fps == 100.0
  model = smplh.load_model(model_path).compact()
  idx = amass.subsample_indices(200, 100.0)
  want = smplh.to_ntu(smplh.forward(model, poses[idx]))
  np.testing.assert_allclose(res.skeleton, want, atol=1e-6)


# ---------------------------------------------------------------------------
# Whole TFDS builds.
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def release(tmp_path_factory):
  root = tmp_path_factory.mktemp('babel_raw')
  return str(root), fb.make_tiny_release(str(root))


def _build(tmp_path, manual_dir, config, **kwargs):
  builder = datasets.make_builder(
    'babel', config, data_dir=str(tmp_path), **kwargs
  )
  datasets.build(builder, manual_dir)
  return tfds.builder_from_directory(os.fspath(builder.data_dir))


def _examples(read, split):
  src = read.as_data_source(split)
  return {src[i]['sequence_id'].decode(): src[i] for i in range(len(src))}


def _skipped(read, split):
  path = os.path.join(os.fspath(read.data_dir), f'skipped_{split}.json')
  with open(path) as f:
    skipped = json.load(f)['skipped']
  return {s['sample'].split()[1]: s['reason'] for s in skipped}


def _expected_skeleton(model_path, seq, num_frames):
  model = smplh.load_model(model_path).compact()
  return amass.ntu_skeleton(model, seq['poses'], seq['fps'], num_frames)


def test_build_subset1(tmp_path, release, model_path):
  manual_dir, seqs = release
  read = _build(
    tmp_path, manual_dir, 'subset1', smplh_model=model_path, num_workers=0
  )
  assert read.info.metadata['class_names'] == [
    'walk',
    'stand',
    'turn',
    'jump',
    'background',
  ]
  train, val = _examples(read, 'train'), _examples(read, 'val')
  assert sorted(train) == ['1', '2', '3'] and sorted(val) == ['101', '102']
  want_labels = {
    # walk [0,2) / turn+hand [1.5,3) / stand [2.5,4.1): walk, turn, stand.
    '1': [0] * 60 + [2] * 15 + [1] * 45,
    # jump [1, 2) with integer times; dance is not a subset-1 class.
    '2': [4] * 30 + [3] * 30 + [4] * 30,
    # 59.99 fps: 75 labelled frames (int(30 * 2.5)); stand beats turn.
    '3': [1] * 75,
    # jump [0,1), unlabelled gap, walk+jump [2, 3.2) past dur = 3.0.
    '101': [3] * 30 + [4] * 30 + [0] * 30,
    # stand from 0.25 s (frame 8); the act_cat=None segment is ignored.
    '102': [4] * 8 + [1] * 37,
  }
  for sid, ex in {**train, **val}.items():
    seq = seqs[int(sid)]
    t = len(want_labels[sid])
    assert ex['labels'].dtype == np.int32
    assert ex['labels'].tolist() == want_labels[sid], sid
    assert ex['skeleton'].shape == (t, 1, 25, 3)
    assert ex['skeleton'].dtype == np.float32 and ex['num_frames'] == t
    assert ex['feat_p'].decode() == seq['entry']['feat_p']
    assert ex['fps'] == np.float32(seq['fps'])
    np.testing.assert_allclose(
      ex['skeleton'][:, 0], _expected_skeleton(model_path, seq, t), atol=1e-6
    )
  skipped = _skipped(read, 'train')
  assert set(skipped) == {'4', '5', '6', '7', '8'}
  assert 'no frame carries a subset1 class' in skipped['4']
  assert '1020 frames' in skipped['5'] and 'max_frames=1000' in skipped['5']
  assert 'CMU/CMU/04/04_01_poses.npz' in skipped['6']
  assert 'no frame_ann' in skipped['7']
  assert '06_01_poses.npz' in skipped['8'] and 'finite' in skipped['8']
  skipped = _skipped(read, 'val')
  assert set(skipped) == {'103', '104'}
  assert 'mocap_framerate' in skipped['103']
  assert "val.json:['104'].frame_ann.labels[0]" in skipped['104']


def test_build_full_with_two_workers(
  tmp_path, release, model_path, monkeypatch
):
  manual_dir, seqs = release
  pools = []

  class CountingPool(common.futures.ProcessPoolExecutor):
    def __init__(self, *args, **kwargs):
      pools.append(args)
      super().__init__(*args, **kwargs)

  monkeypatch.setattr(common.futures, 'ProcessPoolExecutor', CountingPool)
  read = _build(
    tmp_path, manual_dir, 'full', smplh_model=model_path, num_workers=2
  )
  assert pools and pools[0][0] == 2  # train (7 sequences) ran in 2 workers
  names = read.info.metadata['category_names']
  assert len(names) == 150 and 'class_names' not in read.info.metadata
  train = _examples(read, 'train')
  assert sorted(train) == ['1', '2', '3', '4', '5']  # long and dance kept
  assert train['5']['num_frames'] == 1020
  hot = train['1']['categories']
  assert hot.dtype == np.uint8 and hot.shape == (120, 150)
  on = {names[c] for c in np.flatnonzero(hot.any(axis=0))}
  assert on == {'walk', 'turn', 'hand movements', 'stand'}
  assert hot[:, names.index('turn')].tolist() == [0] * 45 + [1] * 45 + [0] * 30
  np.testing.assert_allclose(
    train['4']['skeleton'][:, 0],
    _expected_skeleton(model_path, seqs[4], 60),
    atol=1e-6,
  )
  assert set(_skipped(read, 'train')) == {'6', '7', '8'}


def test_strict_build_raises_naming_the_file(tmp_path, release, model_path):
  manual_dir, _ = release
  builder = datasets.make_builder(
    'babel',
    'subset1',
    data_dir=str(tmp_path),
    smplh_model=model_path,
    strict=True,
    num_workers=0,
  )
  # Both json files are parsed before anything converts.
  with pytest.raises(
    common.RawFormatError, match=r"val\.json:\['104'\].*end_t >= start_t"
  ):
    datasets.build(builder, manual_dir)
  raw = tmp_path / 'raw'
  good = fb.entry(1, 'CMU/CMU/1/a.npz', 1.0, [(['walk'], 0, 1)])
  bad = fb.entry(2, 'CMU/CMU/1/b.npz', 1.0, [(['walk'], 0, 1)])
  fb.write_release(str(raw), 'train', [good, bad])
  fb.write_release(str(raw), 'val', [good])
  fb.write_amass(raw / 'amass/CMU/1/a.npz', fb.random_poses(120), 120.0)
  fb.write_amass(
    raw / 'amass/CMU/1/b.npz',
    fb.random_poses(120),
    120.0,
    drop=('mocap_framerate',),
  )
  builder = datasets.make_builder(
    'babel',
    'subset1',
    data_dir=str(tmp_path / 'out'),
    smplh_model=model_path,
    strict=True,
    num_workers=0,
  )
  with pytest.raises(
    common.RawFormatError, match=r"CMU/1/b\.npz:key 'mocap_framerate'"
  ):
    datasets.build(builder, str(raw))


def test_model_and_release_problems_fail_before_conversion(
  tmp_path, release, model_path, monkeypatch
):
  manual_dir, _ = release

  def no_conversion(task):
    raise AssertionError(f'converted {task} before the error')

  monkeypatch.setattr(amass, 'convert_sequence', no_conversion)

  def build(manual, **kwargs):
    builder = datasets.make_builder(
      'babel', 'subset2', data_dir=str(tmp_path), num_workers=0, **kwargs
    )
    datasets.build(builder, manual)

  with pytest.raises(smplh.SmplhModelError, match='smplh_model='):
    build(manual_dir)
  with pytest.raises(smplh.SmplhModelError, match='not found'):
    build(manual_dir, smplh_model=str(tmp_path / 'missing.pkl'))
  chumpy = fb.write_chumpy_pickle(
    tmp_path / 'ch.pkl', chumpy_keys=('v_template',)
  )
  with pytest.raises(smplh.SmplhModelError, match='clean_ch.py'):
    build(manual_dir, smplh_model=str(chumpy))
  no_val = tmp_path / 'no_val'
  fb.write_release(
    str(no_val),
    'train',
    [fb.entry(1, 'CMU/CMU/1/a.npz', 1.0, [(['sit'], 0, 1)])],
  )
  with pytest.raises(common.RawFormatError, match='val.json'):
    build(str(no_val), smplh_model=model_path)
  assert not os.path.exists(tmp_path / 'babel' / 'subset2' / '1.0.0')


def test_duplicate_babel_sid_is_reported(tmp_path, model_path):
  raw = tmp_path / 'raw'
  good = fb.entry(1, 'CMU/CMU/1/a.npz', 1.0, [(['walk'], 0, 1)])
  fb.write_release(str(raw), 'train', [good])
  # (val gets its own sid: one sequence in two splits fails the whole build)
  fb.write_release(
    str(raw), 'val', [fb.entry(2, 'CMU/CMU/1/a.npz', 1.0, [(['walk'], 0, 1)])]
  )
  path = raw / 'babel_v1.0_release' / 'train.json'
  data = json.loads(path.read_text())
  data['9'] = dict(good)
  path.write_text(json.dumps(data))
  fb.write_amass(raw / 'amass/CMU/1/a.npz', fb.random_poses(120), 120.0)
  read = _build(
    tmp_path / 'out', str(raw), 'subset1', smplh_model=model_path, num_workers=0
  )
  assert sorted(_examples(read, 'train')) == ['1']
  assert (
    "['9'].babel_sid: expected a babel_sid unique"
    in _skipped(read, 'train')['1']
  )


def test_empty_split_gives_a_clear_error(tmp_path, release, model_path):
  manual_dir, _ = release  # no val sequence has a subset-3 class
  with pytest.raises(
    ValueError,
    match=r'babel/subset3/val: no sequence was '
    r'kept .*no frame carries a subset3 class',
  ):
    _build(
      tmp_path, manual_dir, 'subset3', smplh_model=model_path, num_workers=0
    )
