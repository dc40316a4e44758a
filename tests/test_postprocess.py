"""Hand-computed checks of the frame->segment decoders (docs/method.md §5)."""

import numpy as np
import pytest

from skel_jax import postprocess as pp


def _probs(track, num_columns=2, column=0):
  """(T, num_columns) probs with ``track`` in ``column``, rest zero."""
  track = np.asarray(track, np.float64)
  probs = np.zeros((track.size, num_columns))
  probs[:, column] = track
  return probs


def _single(thresholds=(0.5,), **kwargs):
  return pp.DecodeConfig(thresholds=thresholds, **kwargs)


# ---------------------------------------------------------------- RLE ----


def test_labels_to_segments_runs():
  labels = np.array([4, 0, 0, 4, 1, 1, 1, 4, 4, 2])
  assert pp.labels_to_segments(labels, background=4) == [
    (0, 1, 3),
    (1, 4, 7),
    (2, 9, 10),
  ]


def test_labels_to_segments_adjacent_classes_and_edges():
  # Different classes touching each other are separate runs; a run at
  # frame 0 and one reaching the end are kept; background 0 is skipped.
  labels = np.array([1, 1, 2, 2, 2, 0, 3])
  assert pp.labels_to_segments(labels, background=0) == [
    (1, 0, 2),
    (2, 2, 5),
    (3, 6, 7),
  ]
  assert pp.labels_to_segments(np.full(5, 7), background=7) == []
  assert pp.labels_to_segments(np.array([], np.int64), background=0) == []


# ------------------------------------------------------- outer-inner ----


def test_runs_strict_threshold_and_min_length():
  # Runs of p > 0.5: [1,3) (length 2, dropped), [4,7) (length 3, kept).
  # Frame 8 equals the threshold and is NOT inside (strict >).
  track = [0, 0.9, 0.9, 0, 0.6, 0.7, 0.8, 0, 0.5, 0]
  out = pp.decode_segments(_probs(track), _single(outer_weight=0.0))
  assert len(out) == 1
  label, start, end, score = out[0]
  assert (label, start, end) == (0, 4, 7)
  assert score == pytest.approx((0.6 + 0.7 + 0.8) / 3)


def test_outer_inner_score_even_margins():
  # Run [2,6): L = 4, margin m = 1 -> left [1,2) = {.2}, right [6,7) = {.1}.
  # inner = (.9+.8+.7+.6)/4 = .75; outer = (.2+.1)/2 = .15
  # score = .75 - .6*.15 = .66
  track = [0.2, 0.2, 0.9, 0.8, 0.7, 0.6, 0.1, 0.3, 0, 0]
  out = pp.decode_segments(_probs(track), _single())
  assert [o[:3] for o in out] == [(0, 2, 6)]
  assert out[0][3] == pytest.approx(0.66)


def test_outer_inner_margin_rounding_is_int_truncation():
  # Run [3,8): L = 5, m = 1.25. Left boundary int(3 - 1.25) = 1 -> frames
  # {1, 2} (ceil(m) = 2 frames); right boundary int(8 + 1.25) = 9 -> frame
  # {8} (floor(m) = 1 frame); frame 9 (.45) lies outside both margins.
  # outer = (.2 + .4 + .3) / 3 = .3; score = 1 - .6*.3 = .82
  track = [0, 0.2, 0.4, 1, 1, 1, 1, 1, 0.3, 0.45, 0, 0]
  out = pp.decode_segments(_probs(track), _single())
  assert [o[:3] for o in out] == [(0, 3, 8)]
  assert out[0][3] == pytest.approx(0.82)


def test_outer_inner_margins_clipped_to_video():
  # Class 0: run [0,4) at the start: left margin empty, right [4,5)={.2}
  #   -> .9 - .6*.2 = .78
  # Class 1: run [2,6) at the end: left [1,2) = {.1}, right clipped empty
  #   -> .8 - .6*.1 = .74
  # Class 2: the whole video: both margins empty -> outer 0 -> .7
  probs = np.array(
    [
      [0.9, 0.3, 0.7, 0],
      [0.9, 0.1, 0.7, 0],
      [0.9, 0.8, 0.7, 0],
      [0.9, 0.8, 0.7, 0],
      [0.2, 0.8, 0.7, 0],
      [0.4, 0.8, 0.7, 0],
    ]
  )
  out = pp.decode_segments(probs, _single())
  assert [o[:3] for o in out] == [(0, 0, 4), (1, 2, 6), (2, 0, 6)]
  np.testing.assert_allclose([o[3] for o in out], [0.78, 0.74, 0.7])


def test_outer_inner_line_quirks():
  # Same track as test_outer_inner_score_even_margins, released arithmetic:
  # inner also averages frame e = 6: (.9+.8+.7+.6+.1)/5 = .62
  # left [int(2-1), 2) = {.2}; right [e+1, min(T-1, int(6+1+1))) = [7,8)
  # = {.3} -> outer .25 -> score .62 - .15 = .47
  track = [0.2, 0.2, 0.9, 0.8, 0.7, 0.6, 0.1, 0.3, 0, 0]
  out = pp.decode_segments(_probs(track), _single(line_quirks=True))
  assert [o[:3] for o in out] == [(0, 2, 6)]
  assert out[0][3] == pytest.approx(0.47)


def test_thresholds_pooled_then_nms():
  # thr .1 -> run [1,6): inner 2.2/5 = .44, left [0,1) = {0},
  #   right [6, int(7.25)) = {0} -> .44
  # thr .5 -> run [2,5): inner .6, left [int(1.25), 2) = {.2},
  #   right [5, int(5.75)) = empty -> outer .2 -> .6 - .12 = .48
  # NMS keeps [2,5) (.48); [1,6) overlaps 3 / its own 5 = .6 > .2 -> gone.
  track = [0, 0.2, 0.6, 0.6, 0.6, 0.2, 0]
  out = pp.decode_segments(_probs(track), _single(thresholds=(0.1, 0.5)))
  assert len(out) == 1
  assert out[0][:3] == (0, 2, 5)
  assert out[0][3] == pytest.approx(0.48)


def test_identical_runs_from_several_thresholds_collapse():
  track = [0, 0, 0.9, 0.9, 0.9, 0.9, 0, 0]
  out = pp.decode_segments(_probs(track), pp.DecodeConfig())
  assert len(out) == 1 and out[0][:3] == (0, 2, 6)


def test_background_column_is_skipped_and_can_be_moved():
  probs = np.zeros((6, 3))
  probs[:, 0] = 1.0  # background at column 0
  probs[1:5, 2] = 0.9
  out = pp.decode_segments(probs, _single(), background=0)
  assert [o[:3] for o in out] == [(2, 1, 5)]
  # Default background = last column: column 0 now is a class.
  out = pp.decode_segments(probs, _single())
  assert [o[:3] for o in out] == [(0, 0, 6)]


# ---------------------------------------------------------------- NMS ----


def test_nms_uses_own_length_not_iou():
  segments = [
    (0, 0, 100, 0.9),  # kept
    (0, 90, 95, 0.5),  # overlap 5 / own 5 = 1 > .2 (IoU .05) -> dropped
    (0, 200, 205, 0.9),  # kept
    (0, 200, 300, 0.5),  # overlap 5 / own 100 = .05 (IoU .05) -> kept
    (0, 300, 310, 0.4),  # overlap 0 -> kept
    (0, 302, 312, 0.3),  # overlap 8/10 with the one above -> dropped
  ]
  assert pp.nms(segments, 0.2) == [
    (0, 0, 100, 0.9),
    (0, 200, 205, 0.9),
    (0, 200, 300, 0.5),
    (0, 300, 310, 0.4),
  ]


def test_nms_threshold_is_strict_and_per_label():
  # Overlap 2 / own 10 = .2 exactly -> kept (rule is > threshold).
  assert len(pp.nms([(0, 0, 10, 0.9), (0, 8, 18, 0.5)], 0.2)) == 2
  # Full overlap but different labels -> both kept.
  assert len(pp.nms([(0, 0, 10, 0.9), (1, 0, 10, 0.5)], 0.2)) == 2


def test_nms_ties_keep_input_order():
  out = pp.nms([(0, 0, 10, 0.5), (0, 1, 11, 0.5)], 0.2)
  assert out == [(0, 0, 10, 0.5)]
  out = pp.nms([(0, 1, 11, 0.5), (0, 0, 10, 0.5)], 0.2)
  assert out == [(0, 1, 11, 0.5)]


def test_nms_line_quirks_inclusive_arithmetic():
  # Plain: overlap [9,10) = 1 / own 10 = .1 -> kept.
  # Released: stored [0, 11] and [9, 20]; overlap 11 - 9 + 1 = 3, own
  # length 20 - 9 + 1 = 12 -> .25 > .2 -> dropped.
  segments = [(0, 0, 10, 0.9), (0, 9, 19, 0.5)]
  assert len(pp.nms(segments, 0.2)) == 2
  assert pp.nms(segments, 0.2, line_quirks=True) == [(0, 0, 10, 0.9)]


def test_nms_empty():
  assert pp.nms([], 0.2) == []


# -------------------------------------------------------------- jhang ----


def test_jhang_decoder():
  # k = 1: frame t averages frames [max(t-1, 0), min(t+1, T)) = {t-1, t}.
  # smoothed bg: [1, 1, .55, .15, .15, .55, 1, 1]; activity = 1 - bg >= .4
  # on frames 2..5 -> run [2, 6).
  # smoothed c0 on 2..5: .25, .55, .4, .1 -> mean .325
  # smoothed c1 on 2..5: .15, .25, .4, .3 -> mean .275  => class 0, .325
  bg = [1, 1, 0.1, 0.2, 0.1, 1, 1, 1]
  c0 = [0, 0, 0.5, 0.6, 0.2, 0, 0, 0]
  c1 = [0, 0, 0.3, 0.2, 0.6, 0, 0, 0]
  probs = np.stack([c0, c1, bg], axis=1)
  cfg = pp.DecodeConfig(method='jhang', smooth_kernel=1)
  out = pp.decode_segments(probs, cfg)
  assert len(out) == 1
  assert out[0][:3] == (0, 2, 6)
  assert out[0][3] == pytest.approx(0.325)


def test_jhang_defaults_and_no_activity():
  cfg = pp.DecodeConfig(method='jhang')
  assert (cfg.smooth_kernel, cfg.activity_threshold) == (10, 0.4)
  probs = np.zeros((30, 3))
  probs[:, 2] = 1.0
  assert pp.decode_segments(probs, cfg) == []


def test_config_defaults_and_validation():
  cfg = pp.DecodeConfig()
  assert cfg.thresholds == (0.03, 0.035, 0.04, 0.045, 0.05)
  assert (
    cfg.min_length,
    cfg.outer_ratio,
    cfg.outer_weight,
    cfg.nms_threshold,
    cfg.method,
  ) == (3, 0.25, 0.6, 0.2, 'outer_inner')
  with pytest.raises(ValueError):
    pp.DecodeConfig(method='nope')


def test_decode_videos():
  probs = {'a': _probs([0, 0.9, 0.9, 0.9, 0]), 'b': _probs([0, 0, 0])}
  out = pp.decode_videos(probs, _single())
  assert [o[:3] for o in out['a']] == [(0, 1, 4)]
  assert out['b'] == []
