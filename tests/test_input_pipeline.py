"""Host-side input pipeline on in-memory examples (no dataset build): crops,
padding, label masks, subsets and batch assembly against hand-worked values."""

import numpy as np
import pytest

from skel_jax import config_defaults
from skel_jax import input_pipeline as ip

V = 25


def _data_cfg(**overrides):
  c = config_defaults.data_config()
  c.num_persons = 2
  c.update(overrides)
  return c


def _example(t, m=1, sid=b'seq', labels=True):
  """Stored layout (T, M, V, 3). Frame t holds (t + 1)^2 plus a per-joint /
  per-person offset: the translation of the 'plain' normalisation cannot make
  two crop starts look alike, and every frame is identifiable."""
  frames = (np.arange(t, dtype=np.float64) + 1.0) ** 2
  offset = (
    0.01 * np.arange(V)[None, :, None]
    + 0.1 * np.arange(m)[:, None, None]
    + 0.001 * np.arange(3)[None, None, :]
  )
  skel = (frames[:, None, None, None] + offset[None]).astype(np.float32)
  ex = {'skeleton': skel, 'sequence_id': sid, 'num_frames': np.int64(t)}
  if labels:
    # Label = frame index, so a label tells which frame it belongs to.
    ex['labels'] = np.arange(t, dtype=np.int32)
  return ex


def _plain_reference(skel_window, num_persons):
  """(W, M, V, 3) stored window -> model layout (num_persons, W, V, 3),
  translated so person 0's joint 1 at the window's first frame is 0."""
  x = np.transpose(skel_window, (1, 0, 2, 3)).astype(np.float64)
  pad = np.zeros((num_persons - x.shape[0],) + x.shape[1:])
  out = np.concatenate([x - x[0, 0, 1], 0 * pad], 0)
  return out.astype(np.float32)


# ------------------------------------------------------- pad_sequence ----


def test_pad_sequence_pads_short_sequences_with_ignored_labels():
  cfg = _data_cfg()
  ex = _example(5)
  out = ip.pad_sequence(ex, cfg, 8)
  assert out['length'] == 5
  np.testing.assert_array_equal(out['labels'], [0, 1, 2, 3, 4, -1, -1, -1])
  assert out['x'].shape == (2, 8, V, 3)
  np.testing.assert_allclose(
    out['x'][:, :5], _plain_reference(ex['skeleton'], 2), atol=1e-4
  )
  # Padded frames and the absent second person are zeros.
  assert not out['x'][:, 5:].any() and not out['x'][1].any()
  # Another ignore label; an unlabelled (pretraining) example is all ignored.
  assert list(ip.pad_sequence(ex, cfg, 7, ignore_label=-7)['labels'][5:]) == [
    -7,
    -7,
  ]
  np.testing.assert_array_equal(
    ip.pad_sequence(_example(5, labels=False), cfg, 8)['labels'], [-1] * 8
  )


def test_pad_sequence_crops_skeleton_and_labels_at_the_same_start():
  """Guards against cropping the labels at another start than the skeleton
  (train_window crops: the PKU-MMD config trains on 1000-frame windows)."""
  cfg = _data_cfg()
  t, w = 40, 12
  ex = _example(t)
  starts = set()
  for seed in range(6):
    out = ip.pad_sequence(ex, cfg, w, rng=np.random.default_rng(seed))
    # The documented draw: start ~ U{0, ..., T - W} from the given rng.
    start = int(np.random.default_rng(seed).integers(0, t - w + 1))
    starts.add(start)
    assert out['length'] == w
    np.testing.assert_array_equal(out['labels'], np.arange(start, start + w))
    np.testing.assert_allclose(
      out['x'],
      _plain_reference(ex['skeleton'][start : start + w], 2),
      rtol=1e-6,
      atol=1e-3,
    )
  assert len(starts) > 2  # the crops really move


def test_pad_sequence_too_long_without_rng_names_the_sequence():
  with pytest.raises(
    ValueError, match=r"b'long_one'.*20 frames.*pad_length=16"
  ):
    ip.pad_sequence(_example(20, sid=b'long_one'), _data_cfg(), 16)


# ------------------------------------------- persons, loops, windows ----


def test_fit_persons_pads_with_zeros_and_truncates():
  x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) + 1
  padded = ip.fit_persons(x, 4)
  assert padded.shape == (4, 3, 4) and padded.dtype == np.float32
  np.testing.assert_array_equal(padded[:2], x)
  assert not padded[2:].any()
  np.testing.assert_array_equal(ip.fit_persons(x, 1), x[:1])
  assert ip.fit_persons(x, 2) is x


def test_loop_pad_repeats_frames_cyclically():
  x = np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1) + 10
  np.testing.assert_array_equal(
    ip.loop_pad(x, 7)[0, :, 0, 0], [10, 11, 12, 10, 11, 12, 10]
  )
  assert ip.loop_pad(x, 3) is x and ip.loop_pad(x, 2) is x


def test_random_window_is_a_contiguous_slice_of_the_looped_clip():
  x = np.arange(20, dtype=np.float32).reshape(1, 20, 1, 1)
  seen = set()
  for seed in range(8):
    out = ip.random_window(x, 6, np.random.default_rng(seed))[0, :, 0, 0]
    start = int(out[0])
    np.testing.assert_array_equal(out, np.arange(start, start + 6))
    seen.add(start)
  assert len(seen) > 2 and max(seen) <= 14
  # Shorter than the window: the loop-padded clip, whole.
  short = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1)
  np.testing.assert_array_equal(
    ip.random_window(short, 6, np.random.default_rng(0))[0, :, 0, 0],
    [0, 1, 2, 3, 0, 1],
  )


# ---------------------------------------------------- labelled subset ----


def test_labeled_subset():
  np.testing.assert_array_equal(ip.labeled_subset(5, 1.0, 0), np.arange(5))
  a = ip.labeled_subset(16, 0.25, 3)
  assert len(a) == 4 and len(set(a.tolist())) == 4
  assert list(a) == sorted(a) and 0 <= a.min() and a.max() < 16
  np.testing.assert_array_equal(a, ip.labeled_subset(16, 0.25, 3))  # seeded
  assert any(
    not np.array_equal(a, ip.labeled_subset(16, 0.25, s)) for s in range(4, 10)
  )
  assert len(ip.labeled_subset(10, 0.3, 0)) == 3  # round(3.0)
  assert len(ip.labeled_subset(32, 0.3, 0)) == 10  # round(9.6)
  assert len(ip.labeled_subset(100, 0.001, 0)) == 1  # never empty


# ------------------------------------------------- batches (in memory) ----


@pytest.fixture
def source(monkeypatch):
  """Five labelled sequences of 3..7 frames served as an in-memory split."""
  examples = [_example(3 + i, sid=f'seq{i}'.encode()) for i in range(5)]
  monkeypatch.setattr(ip, 'open_split', lambda data_cfg, split: examples)
  return examples


def test_eval_batches_marks_fill_copies_invalid(source):
  cfg = _data_cfg(pad_length=8)
  batches = list(ip.eval_batches(cfg, 'val', global_batch=2))
  assert len(batches) == 3
  assert [b['valid'].tolist() for b in batches] == [
    [True, True],
    [True, True],
    [True, False],
  ]
  assert [b['sequence_id'] for b in batches] == [
    [b'seq0', b'seq1'],
    [b'seq2', b'seq3'],
    [b'seq4', b'seq4'],
  ]
  for b in batches:
    assert b['x'].shape == (2, 2, 8, V, 3)
  np.testing.assert_array_equal(
    np.concatenate([b['length'] for b in batches]), [3, 4, 5, 6, 7, 7]
  )
  last = batches[-1]
  np.testing.assert_array_equal(last['labels'][0], [0, 1, 2, 3, 4, 5, 6, -1])
  np.testing.assert_array_equal(last['x'][1], last['x'][0])
  # ``indices`` keeps its order; ``limit`` cuts before batching.
  picked = list(ip.eval_batches(cfg, 'val', global_batch=4, indices=[3, 1]))
  assert len(picked) == 1 and picked[0]['valid'].tolist() == [
    True,
    True,
    False,
    False,
  ]
  assert picked[0]['sequence_id'][:2] == [b'seq3', b'seq1']
  limited = list(ip.eval_batches(cfg, 'val', global_batch=2, limit=3))
  assert [b['valid'].sum() for b in limited] == [2, 1]


def test_finetune_dataset_train_window_crops_in_step(source):
  """Windows shorter than a sequence crop it (labels with it); longer ones
  pad with ignored labels; step s's batch is a pure function of s."""
  cfg = _data_cfg(train_window=5, pad_length=8)
  ds, indices = ip.finetune_dataset(
    cfg, 'train', global_batch=4, label_fraction=1.0, seed=0
  )
  np.testing.assert_array_equal(indices, np.arange(5))
  batch = ds[2]
  assert batch['x'].shape == (4, 2, 5, V, 3)
  assert batch['labels'].shape == (4, 5)
  for x, labels, length in zip(batch['x'], batch['labels'], batch['length']):
    valid = labels[labels >= 0]
    assert length == len(valid) and length in (3, 4, 5)
    start = int(valid[0])
    np.testing.assert_array_equal(valid, np.arange(start, start + length))
    # The skeleton window starts at the same frame as the labels (frame
    # values are the same in every sequence, translated to the window start).
    stored = (np.arange(start, start + length) + 1.0) ** 2
    want = (stored - stored[0])[:, None] + 0.01 * (np.arange(V) - 1)[None, :]
    np.testing.assert_allclose(x[0, :length, :, 0], want, atol=1e-3)
  for k in batch:
    np.testing.assert_array_equal(ds[2][k], batch[k])


def test_finetune_dataset_pads_whole_sequences_without_window(source):
  cfg = _data_cfg(pad_length=8)
  ds, indices = ip.finetune_dataset(
    cfg, 'train', global_batch=2, label_fraction=0.4, seed=1
  )
  np.testing.assert_array_equal(indices, ip.labeled_subset(5, 0.4, 1))
  lengths = {int(source[i]['num_frames']) for i in indices}
  for step in range(3):
    batch = ds[step]
    assert batch['x'].shape == (2, 2, 8, V, 3)
    assert set(batch['length'].tolist()) <= lengths
    for labels, length in zip(batch['labels'], batch['length']):
      np.testing.assert_array_equal(labels[:length], np.arange(length))
      assert (labels[length:] == -1).all()


def test_pretrain_dataset_windows_are_seeded_per_sample(source):
  cfg = _data_cfg(clip_len=6)
  ds, n = ip.pretrain_dataset(cfg, 'pretrain', global_batch=4, seed=7)
  assert n == 5
  batch = ds[1]
  assert (
    batch['x'].shape == (4, 2, 6, V, 3) and batch['index'].dtype == np.int32
  )
  np.testing.assert_array_equal(ds[1]['x'], batch['x'])
  for x in batch['x']:
    # Each window is translated to its first frame: joint 1 of person 0 at 0.
    np.testing.assert_allclose(x[0, 0, 1], 0.0, atol=1e-4)
  # Global sample indices: step 1 holds samples 4..7 of the shuffled stream.
  np.testing.assert_array_equal(batch['index'], [4, 5, 6, 7])


def test_process_rows_single_process():
  assert ip.process_rows(8) == slice(0, 8)
