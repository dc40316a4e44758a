"""Tests for the synthetic skeleton generator and its TFDS builder."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_builders.synthetic_skeleton import motions
from data_builders.synthetic_skeleton import (
  synthetic_skeleton_dataset_builder as ssb,
)
from skel_jax import graph

_SPEC = motions.SequenceSpec()
_BONES = np.array(graph.INWARD)


def _generate(seed, spec=_SPEC):
  return motions.generate_sequence(np.random.default_rng(seed), spec)


def _runs(labels):
  """(start, end, label) of every maximal run of equal labels."""
  edges = np.flatnonzero(np.diff(labels)) + 1
  starts = np.r_[0, edges]
  ends = np.r_[edges, labels.size]
  return [(s, e, int(labels[s])) for s, e in zip(starts, ends)]


def _bone_lengths(skeleton):
  x = skeleton[:, 0]
  return np.linalg.norm(x[:, _BONES[:, 0]] - x[:, _BONES[:, 1]], axis=-1)


@pytest.fixture(scope='module')
def sequences():
  return [_generate([7, i]) for i in range(50)]


def test_class_constants():
  assert motions.NUM_CLASSES == len(motions.CLASS_NAMES) >= 10
  assert motions.BACKGROUND == motions.NUM_CLASSES
  assert len(set(motions.CLASS_NAMES)) == motions.NUM_CLASSES


def test_deterministic():
  a_skel, a_lab = _generate(123)
  b_skel, b_lab = _generate(123)
  np.testing.assert_array_equal(a_skel, b_skel)
  np.testing.assert_array_equal(a_lab, b_lab)
  c_skel, c_lab = _generate(124)
  assert (
    a_skel.shape != c_skel.shape
    or not np.array_equal(a_skel, c_skel)
    or not np.array_equal(a_lab, c_lab)
  )


def test_shapes_dtypes_and_ranges(sequences):
  for skel, labels in sequences:
    t = labels.shape[0]
    assert _SPEC.min_frames <= t <= _SPEC.max_frames
    assert skel.shape == (t, 1, graph.NUM_JOINTS, 3)
    assert skel.dtype == np.float32 and labels.dtype == np.int32
    assert np.all(np.isfinite(skel))
    assert labels.min() >= 0 and labels.max() <= motions.BACKGROUND
    # Kinect-like camera frame: subject a few metres in front of the sensor.
    depth = skel[..., 2]
    assert 1.0 < depth.min() and depth.max() < 5.5


def test_segments(sequences):
  for _, labels in sequences:
    runs = _runs(labels)
    actions = [r for r in runs if r[2] != motions.BACKGROUND]
    assert actions, 'every sequence needs an action segment'
    assert (labels == motions.BACKGROUND).any()
    for start, end, _ in actions:
      assert end - start >= _SPEC.min_segment


def test_short_sequences_still_have_action_and_background():
  spec = motions.SequenceSpec(min_frames=64, max_frames=128)
  for i in range(100):
    skel, labels = _generate([3, i], spec)
    assert 64 <= labels.size <= 128 and skel.shape[0] == labels.size
    assert (labels < motions.BACKGROUND).any()
    assert (labels == motions.BACKGROUND).any()


def test_all_classes_appear(sequences):
  seen = set(np.concatenate([labels for _, labels in sequences]).tolist())
  assert seen == set(range(motions.NUM_CLASSES + 1))


def test_bone_lengths_constant_without_noise():
  spec = motions.SequenceSpec(noise_std=0.0)
  for i in range(10):
    lengths = _bone_lengths(_generate([11, i], spec)[0])
    np.testing.assert_allclose(
      lengths, lengths[:1].repeat(len(lengths), 0), atol=1e-5
    )
    assert lengths.min() > 0.02 and lengths.max() < 0.6


def test_bone_lengths_constant_up_to_noise(sequences):
  # Difference of two noisy joints: std ~ sqrt(2) * 1.5 * noise per axis.
  for skel, _ in sequences[:10]:
    lengths = _bone_lengths(skel)
    assert lengths.std(axis=0).max() < 4 * _SPEC.noise_std


def test_noise_is_present():
  skel, _ = _generate(5)
  lengths = _bone_lengths(skel)
  assert lengths.std(axis=0).mean() > 0.3 * _SPEC.noise_std


def test_motion_is_smooth_without_noise():
  spec = motions.SequenceSpec(noise_std=0.0)
  for i in range(20):
    skel, _ = _generate([13, i], spec)
    step = np.linalg.norm(np.diff(skel[:, 0], axis=0), axis=-1)
    assert step.max() < 0.6  # metres per frame: no teleporting joints


def test_body_scale_varies():
  heights = [np.ptp(_generate([17, i])[0][0, 0, :, 1]) for i in range(20)]
  assert np.std(heights) > 0.03


def test_spec_validation():
  with pytest.raises(ValueError):
    motions.SequenceSpec(min_frames=20)
  with pytest.raises(ValueError):
    motions.SequenceSpec(min_frames=300, max_frames=200)


def test_builder_configs():
  configs = {c.name: c for c in ssb.Builder.BUILDER_CONFIGS}
  assert configs['default'].num_pretrain == 800
  assert configs['default'].num_train == 200
  assert configs['default'].num_val == 100
  assert (configs['default'].min_frames, configs['default'].max_frames) == (
    200,
    320,
  )
  assert configs['smoke'].num_pretrain == 64
  assert (configs['smoke'].min_frames, configs['smoke'].max_frames) == (64, 128)


def test_tfds_build_and_read(tmp_path):
  config = ssb.SyntheticConfig(
    name='tiny',
    num_pretrain=5,
    num_train=3,
    num_val=2,
    min_frames=64,
    max_frames=96,
    seed=3,
  )
  builder = ssb.Builder(config=config, data_dir=str(tmp_path))
  assert builder.name == 'synthetic_skeleton'
  builder.download_and_prepare(file_format='array_record')

  reader = tfds.builder_from_directory(builder.data_dir)
  assert list(reader.info.metadata['class_names']) == (
    list(motions.CLASS_NAMES) + ['background']
  )
  assert reader.info.supervised_keys is None
  sources = reader.as_data_source()
  assert {k: len(v) for k, v in sources.items()} == {
    'pretrain': 5,
    'train': 3,
    'val': 2,
  }

  by_id = {}
  for i in range(len(sources['train'])):
    ex = sources['train'][i]
    sid = ex['sequence_id']
    by_id[sid.decode() if isinstance(sid, bytes) else sid] = ex
  assert sorted(by_id) == ['train_00000', 'train_00001', 'train_00002']

  ex = by_id['train_00001']
  t = int(ex['num_frames'])
  assert 64 <= t <= 96
  assert ex['skeleton'].shape == (t, 1, graph.NUM_JOINTS, 3)
  assert ex['skeleton'].dtype == np.float32
  assert ex['labels'].shape == (t,) and ex['labels'].dtype == np.int32
  # Stored examples equal a direct call with the documented seeding.
  skel, labels = motions.generate_sequence(
    np.random.default_rng([3, 1, 1]), config.sequence_spec()
  )
  np.testing.assert_array_equal(ex['skeleton'], skel)
  np.testing.assert_array_equal(ex['labels'], labels)
