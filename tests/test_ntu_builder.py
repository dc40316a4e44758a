"""NTU RGB+D parser and TFDS builder on synthetic raw trees (fixtures_ntu)."""

import json
import os

import fixtures_ntu
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_builders.common import RawFormatError
from data_builders.ntu_rgbd import ntu_rgbd_dataset_builder as ntu
from data_builders.ntu_rgbd import skeleton_file
from skel_jax import datasets

CONFIGS = ('ntu60_xsub', 'ntu60_xview', 'ntu120_xsub', 'ntu120_xset')


@pytest.fixture(scope='module')
def good_tree(tmp_path_factory):
  root = tmp_path_factory.mktemp('ntu_raw')
  return str(root), fixtures_ntu.write_good_tree(str(root))


@pytest.fixture(scope='module')
def bad_tree(tmp_path_factory):
  root = tmp_path_factory.mktemp('ntu_bad')
  good, bad = fixtures_ntu.write_bad_tree(str(root))
  return str(root), good, bad


@pytest.fixture(scope='module')
def built(good_tree, tmp_path_factory):
  """Every config built once from the edge-case tree (in-process workers)."""
  raw, _ = good_tree
  out = {}
  for config in CONFIGS:
    data_dir = str(tmp_path_factory.mktemp(f'tfds_{config}'))
    builder = datasets.make_builder('ntu_rgbd', config, data_dir, num_workers=0)
    datasets.build(builder, raw)
    out[config] = builder.data_dir
  return out


def _read_split(data_dir, split):
  source = tfds.builder_from_directory(data_dir).as_data_source(split)
  return {ex['sample_name'].decode(): ex for ex in source}


def _assert_record_equal(got, expected, stem):
  for key, want in expected.items():
    if key == 'num_frames':
      assert int(got[key]) == want, (stem, key)
      continue
    have = np.asarray(got[key])
    assert have.dtype == want.dtype, (stem, key, have.dtype)
    assert have.shape == want.shape, (stem, key, have.shape, want.shape)
    np.testing.assert_array_equal(have, want, err_msg=f'{stem} {key}')


# ---------------------------------------------------------------------------
# Parser.
# ---------------------------------------------------------------------------
def test_parsed_values_equal_written(good_tree):
  _, samples = good_tree
  for stem, (path, expected) in samples.items():
    _assert_record_equal(skeleton_file.read_skeleton_file(path), expected, stem)


def test_body_ids_are_exact_int64(good_tree):
  _, samples = good_tree
  got = skeleton_file.read_skeleton_file(samples['S002C002P003R002A013'][0])
  ids = got['body_id']
  assert ids.dtype == np.int64
  base = fixtures_ntu.BASE_BODY_ID + 3200
  # Persons 0 and 1 (ids differ by 1), the noise body in frames 1-2 (+7) and
  # the swapped order in frames 3-4: positions, not ids, define slots.
  np.testing.assert_array_equal(
    ids,
    np.array(
      [
        base,
        base + 1,
        base,
        base + 1,
        base + 7,
        base,
        base + 1,
        base + 7,
        base + 1,
        base,
        base + 1,
        base,
      ],
      np.int64,
    ),
  )
  assert float(base) == float(base + 1)  # why they must never go via float
  np.testing.assert_array_equal(
    got['body_slot'], [0, 1, 0, 1, 2, 0, 1, 2, 0, 1, 0, 1]
  )
  np.testing.assert_array_equal(
    got['body_frame'], [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4]
  )


def test_legal_quirks(good_tree):
  _, samples = good_tree
  zero = skeleton_file.read_skeleton_file(samples['S001C001P001R001A001'][0])
  assert zero['num_frames'] == 6 and 2 not in zero['body_frame']
  empty = skeleton_file.read_skeleton_file(samples['S003C001P002R001A002'][0])
  assert empty['num_frames'] == 3 and empty['bodies_xyz'].shape == (0, 25, 3)
  long = skeleton_file.read_skeleton_file(samples['S005C003P008R001A030'][0])
  assert long['num_frames'] == 305 and long['body_frame'][-1] == 304
  path = samples['S010C001P010R001A055'][0]
  with open(path, 'rb') as f:
    raw = f.read()
  assert raw.count(b'\r\n') == raw.count(b'\n')  # really CRLF
  lf = skeleton_file.parse_skeleton_text(raw.decode().replace('\r\n', '\n'))
  crlf = skeleton_file.read_skeleton_file(path)
  for key in crlf:
    np.testing.assert_array_equal(crlf[key], lf[key])


def test_trailing_blank_lines_are_legal(good_tree):
  _, samples = good_tree
  path, expected = samples['S001C001P001R001A001']
  with open(path) as f:
    text = f.read()
  got = skeleton_file.parse_skeleton_text(text + '\n  \n')
  _assert_record_equal(got, expected, 'trailing blank lines')


@pytest.mark.parametrize('case', range(12))
def test_bad_file_errors_name_file_line_and_expectation(bad_tree, case):
  _, _, bad = bad_tree
  name = sorted(bad)[case]
  path, line, fragment = bad[name]
  with pytest.raises(RawFormatError) as info:
    skeleton_file.convert(path)
  err = info.value
  assert err.path == path and err.line == line, str(err)
  where = f'{path}:{line}:' if line is not None else f'{path}:'
  assert str(err).startswith(where), str(err)
  assert fragment in str(err) and 'expected' in str(err)


def test_bad_tree_covers_every_case(bad_tree):
  _, _, bad = bad_tree
  assert len(bad) == 12
  missing = skeleton_file.read_sample_list(ntu.MISSING_LISTS['ntu120'])
  assert not {n.split('.')[0] for n in bad} & missing


def test_name_parsing():
  name = skeleton_file.parse_name('/x/S017C003P040R002A120.skeleton')
  assert (
    name.setup,
    name.camera,
    name.performer,
    name.replication,
    name.action,
    name.label,
  ) == (17, 3, 40, 2, 120, 119)
  for bad in (
    'S001C004P001R001A001',
    'S033C001P001R001A001',
    'S001C001P001R001A121',
    'S001C001P001R001A01',
    's001c001p001r001a001',
  ):
    with pytest.raises(RawFormatError, match='expected'):
      skeleton_file.parse_name(bad + '.skeleton')


def test_missing_lists_and_class_names(tmp_path):
  ntu60 = skeleton_file.read_sample_list(ntu.MISSING_LISTS['ntu60'])
  ntu120 = skeleton_file.read_sample_list(ntu.MISSING_LISTS['ntu120'])
  assert len(ntu60) == 302 and len(ntu120) == 535 and ntu60 <= ntu120
  assert {s for s in ntu120 if int(s[1:4]) <= 17} == ntu60
  # Header-less copy without a final newline (the 2s-AGCN variant).
  headerless = tmp_path / 'list.txt'
  headerless.write_text('\n'.join(sorted(ntu60)))
  assert skeleton_file.read_sample_list(str(headerless)) == ntu60
  names = ntu.class_names(120)
  assert len(names) == 120 and names[0] == 'drink water'
  assert names[59] == 'walking apart from each other'
  assert ntu.class_names(60) == names[:60]


def test_split_protocols():
  def name(stem):
    return skeleton_file.parse_name(stem)

  cfg = {c.name: c for c in ntu.Builder.BUILDER_CONFIGS}
  assert len(ntu.NTU120_TRAIN_PERFORMERS) == 53
  xsub60 = cfg['ntu60_xsub']
  assert ntu.split_of(name('S001C001P038R001A001'), xsub60) == 'train'
  assert ntu.split_of(name('S001C001P039R001A001'), xsub60) == 'test'
  assert (
    ntu.split_of(name('S020C001P103R001A001'), cfg['ntu120_xsub']) == 'train'
  )
  assert (
    ntu.split_of(name('S020C001P104R001A001'), cfg['ntu120_xsub']) == 'test'
  )
  assert (
    ntu.split_of(name('S001C003P001R001A001'), cfg['ntu60_xview']) == 'train'
  )
  assert (
    ntu.split_of(name('S032C001P001R001A001'), cfg['ntu120_xset']) == 'train'
  )
  assert (
    ntu.split_of(name('S031C001P001R001A001'), cfg['ntu120_xset']) == 'test'
  )
  assert not ntu.in_config(name('S018C001P001R001A001'), cfg['ntu60_xsub'])
  assert not ntu.in_config(name('S017C001P001R001A061'), cfg['ntu60_xview'])


# ---------------------------------------------------------------------------
# Full TFDS builds.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('config', CONFIGS)
def test_build_split_assignment_and_values(built, good_tree, config):
  _, samples = good_tree
  data_dir = built[config]
  for split in ('train', 'test'):
    records = _read_split(data_dir, split)
    want = {
      stem
      for stem, splits in fixtures_ntu.GOOD_SPLITS.items()
      if splits[config] == split
    }
    assert set(records) == want, (config, split)
    for stem, ex in records.items():
      _assert_record_equal(ex, samples[stem][1], stem)
      name = skeleton_file.parse_name(stem)
      assert (
        ex['setup'],
        ex['camera'],
        ex['performer'],
        ex['replication'],
        ex['label'],
      ) == (
        name.setup,
        name.camera,
        name.performer,
        name.replication,
        name.action - 1,
      )
    # The skip report is in the final dataset directory and lists exactly
    # this split's missing-list samples, with the reason.
    with open(os.path.join(data_dir, f'skipped_{split}.json')) as f:
      report = json.load(f)
    dropped = {
      os.path.basename(s['sample'])[:-9]: s['reason'] for s in report['skipped']
    }
    want_dropped = {
      stem
      for stem, splits in fixtures_ntu.GOOD_SPLITS.items()
      if splits[config] == 'dropped'
      and ntu.split_of(
        skeleton_file.parse_name(stem), ntu.Builder.builder_configs[config]
      )
      == split
    }
    assert set(dropped) == want_dropped
    assert all('missing' in r for r in dropped.values())
    assert report['converted'] == len(want)
  info = tfds.builder_from_directory(data_dir).info
  num_classes = 60 if config.startswith('ntu60') else 120
  assert info.metadata['class_names'] == ntu.class_names(num_classes)
  assert info.features['label'].num_classes == num_classes
  assert not [
    d
    for d in os.listdir(os.path.dirname(data_dir))
    if d.startswith('incomplete')
  ]


def test_to_dense_from_stored_example(built):
  records = _read_split(built['ntu120_xsub'], 'test')
  ex = records['S002C002P003R002A013']
  dense = ntu.to_dense(ex)
  assert dense.shape == (5, 3, 25, 3) and dense.dtype == np.float32
  np.testing.assert_array_equal(dense[1, 2], ex['bodies_xyz'][4])
  assert not dense[0, 2].any()  # no third body in frame 0
  np.testing.assert_array_equal(ntu.to_dense(ex, max_bodies=2), dense[:, :2])
  empty = _read_split(built['ntu120_xsub'], 'train')['S003C001P002R001A002']
  assert ntu.to_dense(empty).shape == (3, 1, 25, 3)
  assert not ntu.to_dense(empty).any()


def test_parallel_build_equals_in_process(good_tree, built, tmp_path):
  raw, _ = good_tree
  builder = datasets.make_builder(
    'ntu_rgbd', 'ntu120_xsub', str(tmp_path), num_workers=2
  )
  datasets.build(builder, raw)
  for split in ('train', 'test'):
    a = _read_split(builder.data_dir, split)
    b = _read_split(built['ntu120_xsub'], split)
    assert set(a) == set(b)
    for stem in a:
      for key in a[stem]:
        np.testing.assert_array_equal(a[stem][key], b[stem][key])


def test_lenient_build_records_every_bad_file(bad_tree, tmp_path):
  raw, good, bad = bad_tree
  builder = datasets.make_builder(
    'ntu_rgbd', 'ntu60_xsub', str(tmp_path), num_workers=2
  )
  datasets.build(builder, raw)
  assert set(_read_split(builder.data_dir, 'train')) == {'S001C001P001R001A001'}
  assert set(_read_split(builder.data_dir, 'test')) == {'S001C001P003R001A001'}
  reports = {}
  for split in ('train', 'test'):
    with open(os.path.join(builder.data_dir, f'skipped_{split}.json')) as f:
      reports[split] = {
        s['sample']: s['reason'] for s in json.load(f)['skipped']
      }
  for path, line, fragment in bad.values():
    reason = reports['train'][path]
    assert fragment in reason
    if line is None:  # no split from a bad name: listed in both reports
      assert fragment in reports['test'][path]
    else:
      assert reason.startswith(f'{path}:{line}: expected')
  assert len(reports['train']) == len(bad) and len(reports['test']) == 1


@pytest.mark.parametrize('num_workers', [0, 2])
def test_strict_build_raises_with_location(bad_tree, tmp_path, num_workers):
  _, good, bad = bad_tree
  raw = tmp_path / 'raw'
  raw.mkdir()
  for stem, path in good.items():
    (raw / f'{stem}.skeleton').write_bytes(open(path, 'rb').read())
  for name in (
    'S001C001P001R001A003.skeleton',
    'S001C001P001R001A004.skeleton',
    'S001C001P001R001A005.skeleton',
  ):
    (raw / name).write_bytes(open(bad[name][0], 'rb').read())
  builder = datasets.make_builder(
    'ntu_rgbd',
    'ntu60_xsub',
    str(tmp_path / 'tfds'),
    strict=True,
    num_workers=num_workers,
  )
  with pytest.raises(RawFormatError) as info:
    datasets.build(builder, str(raw))
  # The first bad file in stem order, with its line and expectation.
  assert str(info.value).startswith(
    f'{raw}/S001C001P001R001A003.skeleton:10: expected a number'
  )
  assert not os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json'))

  (raw / 'S01C001P001R001A001.skeleton').write_text('1\n0\n')
  builder = datasets.make_builder(
    'ntu_rgbd',
    'ntu60_xsub',
    str(tmp_path / 'tfds'),
    strict=True,
    num_workers=num_workers,
  )
  with pytest.raises(RawFormatError, match='SsssCcccPpppRrrrAaaa'):
    datasets.build(builder, str(raw))


def test_rerun_after_interrupted_build(good_tree, tmp_path, monkeypatch):
  raw, _ = good_tree
  data_dir = str(tmp_path)
  real_convert = skeleton_file.convert
  calls = []

  def flaky_convert(path):
    calls.append(path)
    if len(calls) == 2:
      raise RuntimeError('simulated crash mid-generation')
    return real_convert(path)

  monkeypatch.setattr(skeleton_file, 'convert', flaky_convert)
  builder = datasets.make_builder(
    'ntu_rgbd', 'ntu60_xsub', data_dir, num_workers=0
  )
  with pytest.raises(RuntimeError, match='simulated crash'):
    datasets.build(builder, raw)
  assert not os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json'))
  monkeypatch.setattr(skeleton_file, 'convert', real_convert)
  # A killed process leaves its temporary directory behind; it must not
  # disturb the re-run either.
  stale = os.path.join(
    os.path.dirname(builder.data_dir), 'incomplete.ABC123_1.0.0'
  )
  os.makedirs(stale)
  with open(
    os.path.join(stale, 'ntu_rgbd-train.array_record-00000-of-00001'), 'w'
  ) as f:
    f.write('junk')
  builder = datasets.make_builder(
    'ntu_rgbd', 'ntu60_xsub', data_dir, num_workers=0
  )
  datasets.build(builder, raw)
  want = {
    stem
    for stem, s in fixtures_ntu.GOOD_SPLITS.items()
    if s['ntu60_xsub'] == 'train'
  }
  assert set(_read_split(builder.data_dir, 'train')) == want
  assert os.path.exists(os.path.join(builder.data_dir, 'skipped_train.json'))


def test_empty_manual_dir_is_a_clear_error(tmp_path):
  (tmp_path / 'raw').mkdir()
  (tmp_path / 'raw' / 'readme.txt').write_text('no skeletons here')
  builder = datasets.make_builder(
    'ntu_rgbd', 'ntu60_xsub', str(tmp_path / 'tfds')
  )
  with pytest.raises(FileNotFoundError, match='no .skeleton files'):
    datasets.build(builder, str(tmp_path / 'raw'))


def test_builder_options():
  with pytest.raises(ValueError, match='does not take'):
    datasets.make_builder(
      'ntu_rgbd', 'ntu60_xsub', '/tmp/unused', smplh_model='x'
    )
  with pytest.raises(ValueError, match='unknown config'):
    datasets.make_builder('ntu_rgbd', 'ntu60_xset', '/tmp/unused')


def test_duplicate_stems(good_tree, tmp_path):
  _, samples = good_tree
  raw = tmp_path / 'raw'
  for folder in ('a', 'b'):
    for stem in ('S001C001P001R001A001', 'S002C002P003R002A013'):
      (raw / folder).mkdir(parents=True, exist_ok=True)
      (raw / folder / f'{stem}.skeleton').write_bytes(
        open(samples[stem][0], 'rb').read()
      )
  builder = datasets.make_builder(
    'ntu_rgbd', 'ntu60_xsub', str(tmp_path / 'lenient'), num_workers=0
  )
  datasets.build(builder, str(raw))
  with open(os.path.join(builder.data_dir, 'skipped_train.json')) as f:
    skipped = json.load(f)['skipped']
  assert [s['sample'] for s in skipped] == [
    str(raw / 'b' / 'S001C001P001R001A001.skeleton')
  ]
  assert 'one file per sample' in skipped[0]['reason']
  assert set(_read_split(builder.data_dir, 'train')) == {'S001C001P001R001A001'}
  builder = datasets.make_builder(
    'ntu_rgbd', 'ntu60_xsub', str(tmp_path / 'strict'), strict=True
  )
  with pytest.raises(RawFormatError, match='is also at'):
    datasets.build(builder, str(raw))
