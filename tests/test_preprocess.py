"""Hand-computed cases for the preprocessing families (skel_jax.preprocess)."""

import math

import numpy as np
import pytest

from skel_jax import preprocess as pp

V = 25


def _example(records, num_frames):
  """A raw NTU example from (frame, slot, xyz (25, 3)) records."""
  return {
    'num_frames': num_frames,
    'body_frame': np.array([r[0] for r in records], np.int32),
    'body_slot': np.array([r[1] for r in records], np.int32),
    'bodies_xyz': np.array([r[2] for r in records], np.float32).reshape(
      -1, V, 3
    ),
  }


def _const(value):
  return np.full((V, 3), value, np.float32)


# ---------------------------------------------------------------------------
# Dense conversion and body selection.
# ---------------------------------------------------------------------------
def test_to_dense_places_bodies_by_slot():
  ex = _example(
    [
      (0, 0, _const(1)),
      (0, 1, _const(2)),
      (2, 0, _const(3)),
      (2, 1, _const(4)),
      (2, 2, _const(5)),
    ],
    num_frames=4,
  )
  dense = pp.to_dense(ex)
  assert dense.shape == (4, 3, V, 3)
  assert dense[0, 1, 0, 0] == 2 and dense[2, 2, 0, 0] == 5
  assert not dense[1].any() and not dense[3].any()  # zero-body frames
  assert pp.to_dense(ex, max_bodies=1).shape == (4, 1, V, 3)


def test_aimclr_select_bodies_first_two_positions_and_300_frames():
  # Body ids are irrelevant: slot order wins even if persons swap positions;
  # a third body is dropped; frames beyond 300 are dropped.
  records = [
    (0, 0, _const(1)),
    (0, 1, _const(2)),
    (0, 2, _const(9)),
    (1, 0, _const(2)),
    (1, 1, _const(1)),
    (304, 0, _const(7)),
    (299, 1, _const(6)),
  ]
  out = pp.aimclr_select_bodies(_example(records, num_frames=305))
  assert out.shape == (2, 300, V, 3) and out.dtype == np.float32
  assert out[0, 0, 0, 0] == 1 and out[1, 0, 0, 0] == 2
  assert out[0, 1, 0, 0] == 2 and out[1, 1, 0, 0] == 1
  assert out[1, 299, 0, 0] == 6
  assert not (out == 9).any() and not (out == 7).any()
  assert not out[:, 2:299].any()


# ---------------------------------------------------------------------------
# (A) AimCLR frame50.
# ---------------------------------------------------------------------------
def _ramp(length, total=300):
  """Person 0: every coordinate of frame t equals t + 1 for t < length."""
  x = np.zeros((2, total, V, 3), np.float32)
  x[0, :length] = (np.arange(length, dtype=np.float32) + 1)[:, None, None]
  return x


def test_resize_linear_ramp_downsample():
  # L = 100 -> 50: src = (d + 0.5) * 2 - 0.5 = 2d + 0.5, so the ramp t + 1
  # becomes 2d + 1.5.
  resized = pp._opencv_linear_time_resize(
    np.arange(1, 101, dtype=np.float32), 100, 50
  )
  np.testing.assert_allclose(
    resized, 2 * np.arange(50) + 1.5, rtol=0, atol=1e-5
  )
  pos, motion = pp.aimclr_frame50(
    _ramp(100), y_rotation=False, with_motion=True
  )
  assert pos.shape == motion.shape == (2, 50, V, 3)
  # Every joint carries the same ramp, so joint-21-relative positions are 0.
  assert not pos.any()
  # Raw motion is 1 for t < 99 and x[100] - x[99] = -100 at t = 99; output
  # frame 49 (src 98.5) blends them half and half.
  np.testing.assert_allclose(motion[0, :49], 1.0)
  np.testing.assert_allclose(motion[0, 49], 0.5 * 1 + 0.5 * -100)
  assert not motion[1].any()


def test_resize_linear_ramp_upsample_clamps_edges():
  # L = 25 -> 50: src = (d + 0.5) / 2 - 0.5 = d / 2 - 0.25. d = 0 reads
  # frame -0.25 -> clamped to frame 0; d = 49 reads 24.25 -> frame 24.
  ramp = np.arange(25, dtype=np.float32)
  out = pp._opencv_linear_time_resize(ramp, 25, 50)
  want = np.clip(np.arange(50) / 2 - 0.25, 0, 24)
  np.testing.assert_allclose(out, want, rtol=0, atol=1e-6)
  assert out[0] == 0 and out[-1] == 24
  # Same length: identity.
  np.testing.assert_array_equal(
    pp._opencv_linear_time_resize(ramp, 25, 25), ramp
  )


def test_valid_length_counts_nonzero_frames_and_resizes_the_prefix():
  x = np.zeros((2, 300, V, 3), np.float32)
  x[0, [0, 1, 5], :, :] = 1.0  # 3 non-zero frames, not a prefix
  x[0, [0, 1, 5], 20, :] = 0.0  # joint 21 at the origin
  assert pp.aimclr_valid_length(x) == 3
  pos = pp.aimclr_frame50(x, t_length=3, y_rotation=False)
  # Frames [0, 3) are resampled (frame 2 is empty), not frames {0, 1, 5}.
  np.testing.assert_array_equal(pos[0, :, 0, 0], [1, 1, 0])


def test_relative_coordinates_keep_absent_person_zero():
  x = np.zeros((2, 300, V, 3), np.float32)
  x[0, :10] = np.random.default_rng(0).normal(size=(10, V, 3))
  pos = pp.aimclr_frame50(x, y_rotation=False)
  assert not pos[1].any()
  np.testing.assert_allclose(pos[0, :, 20], 0, atol=1e-7)


def _shoulder_frames(vectors):
  """Person 0 over len(vectors) frames: left shoulder (joint 4) at the
  origin, right shoulder (joint 8) at the given vector, joint 0 non-zero,
  joint 20 at the origin (so relative coordinates are unchanged)."""
  x = np.zeros((2, len(vectors), V, 3), np.float32)
  x[0, :, 0] = (0, -0.5, 0)
  x[0, :, 8] = vectors
  return x


def test_y_rotation_two_frame_toy_by_hand():
  # Frame 0: v = (1, 0, 1); frame 1: v = (1, 0, -0.5). Sum of v_z = 0.5 >= 0,
  # so both angles are negated: theta_0 = -45 deg, theta_1 = -atan(0.5).
  x = _shoulder_frames([(1, 0, 1), (1, 0, -0.5)])
  out = pp.aimclr_frame50(x, t_length=2)
  # R_y(t) p = (cos t x - sin t z, y, sin t x + cos t z).
  # Frame 0: (cos45 + sin45, 0, -sin45 + cos45) = (sqrt 2, 0, 0).
  np.testing.assert_allclose(out[0, 0, 8], [math.sqrt(2), 0, 0], atol=2e-4)
  # Frame 1: cos = 2/sqrt5, sin = 1/sqrt5 -> (2/sqrt5 - 0.5/sqrt5, 0,
  # -1/sqrt5 - 1/sqrt5) = (3/(2 sqrt5), 0, -2/sqrt5): the per-sequence sign
  # leaves this frame unaligned.
  s5 = math.sqrt(5)
  np.testing.assert_allclose(
    out[0, 1, 8], [3 / (2 * s5), 0, -2 / s5], atol=2e-4
  )
  # Joint 0 (0, -0.5, 0) lies on the y axis: unchanged.
  np.testing.assert_allclose(out[0, :, 0], [[0, -0.5, 0]] * 2, atol=1e-6)


def test_y_rotation_sign_rule_negative_sum():
  # Sum of v_z = -1 < 0: angles keep their sign, theta = +45 deg, and
  # (1, 0, -1) -> (cos45 + sin45, 0, sin45 - cos45) = (sqrt 2, 0, 0).
  x = _shoulder_frames([(1, 0, -1), (1, 0, -1)])
  out = pp.aimclr_frame50(x, t_length=2)
  np.testing.assert_allclose(
    out[0, :, 8], [[math.sqrt(2), 0, 0]] * 2, atol=2e-4
  )
  # With the sum exactly zero the angles are negated (>= 0 rule): frame 0's
  # (1, 0, 1) at -45 deg -> (sqrt 2, 0, 0), frame 1's (1, 0, -1) at -45 deg
  # -> (cos45 - sin45, 0, -sin45 - cos45) = (0, 0, -sqrt 2).
  x = _shoulder_frames([(1, 0, 1), (1, 0, -1)])
  out = pp.aimclr_frame50(x, t_length=2)
  np.testing.assert_allclose(out[0, 0, 8], [math.sqrt(2), 0, 0], atol=2e-4)
  np.testing.assert_allclose(out[0, 1, 8], [0, 0, -math.sqrt(2)], atol=2e-4)


def test_frame50_without_person_zero_is_zero():
  out = pp.aimclr_frame50(np.zeros((2, 300, V, 3), np.float32))
  assert out.shape == (2, 50, V, 3) and not out.any()


# ---------------------------------------------------------------------------
# (B) 2s-AGCN.
# ---------------------------------------------------------------------------
def _alternating(amplitude, frames=6, offset=1.0):
  """xyz = offset +- amplitude in alternate frames: population std per
  coordinate = amplitude, energy = 3 * amplitude."""
  sign = np.where(np.arange(frames) % 2 == 0, 1.0, -1.0)
  return offset + amplitude * sign[:, None, None] * np.ones((frames, V, 3))


def test_agcn_energy_ranking_with_three_bodies():
  records = []
  for slot, amp in enumerate((0.1, 0.9, 0.5)):  # energies 0.3, 2.7, 1.5
    for t, frame in enumerate(_alternating(amp)):
      records.append((t, slot, frame))
  ex = _example(records, num_frames=6)
  assert pp._agcn_energy(_alternating(0.5)) == pytest.approx(1.5)
  out = pp.agcn_select_bodies(ex)
  assert out.shape == (2, 300, V, 3)
  np.testing.assert_allclose(out[0, :6], _alternating(0.9), rtol=1e-6)
  np.testing.assert_allclose(out[1, :6], _alternating(0.5), rtol=1e-6)
  assert not out[:, 6:].any()


def test_agcn_energy_ties_take_the_higher_slot():
  # A perfectly static body has energy 0 like the empty slots 1-3; the
  # reference order argsort()[::-1] then prefers the higher (empty) slots.
  ex = _example([(t, 0, _const(1)) for t in range(4)], num_frames=4)
  assert not pp.agcn_select_bodies(ex).any()
  ex = _example(
    [(t, 0, _alternating(0.2, 4)[t]) for t in range(4)], num_frames=4
  )
  out = pp.agcn_select_bodies(ex)
  assert out[0, :4].any() and not out[1].any()


def test_agcn_energy_uses_valid_frames_only():
  body = np.zeros((5, V, 3))
  body[:2] = _alternating(0.3, 2)
  body[2, 0] = (1, -1, 0)  # sums to zero: not a valid frame
  assert pp._agcn_energy(body) == pytest.approx(0.9)


def _person(frames):
  """(T, V, 3) with frame t = the constant frames[t] (0 = empty)."""
  return np.stack([_const(v) for v in frames])


def test_agcn_padding_shift_and_repeat():
  x = np.zeros((2, 7, V, 3), np.float32)
  x[0] = _person([0, 1, 2, 0, 0, 0, 0])  # starts empty: shift, then repeat
  x[1] = _person([3, 0, 4, 0, 0, 0, 0])  # inner gap stays, tail repeats
  before = x.copy()
  # zaxis/xaxis (0, 0) give zero vectors, i.e. identity rotations.
  out = pp.agcn_pre_normalization(x, zaxis=(0, 0), xaxis=(0, 0))
  padded0 = [1, 2, 1, 2, 1, 2, 1]
  padded1 = [3, 0, 4, 3, 0, 4, 3]
  want = np.stack([_person(padded0), _person(padded1)])
  # Then centring on person 0's joint 1 per frame, masking empty joints.
  center = want[0, :, 1:2]
  mask = (want.sum(-1) != 0)[..., None]
  np.testing.assert_allclose(out, (want - center) * mask)
  np.testing.assert_array_equal(x, before)  # the input is not modified


def test_agcn_centring_mask_uses_signed_sums():
  x = np.zeros((1, 2, V, 3), np.float32)
  x[0] = 1.0
  x[0, :, 1] = (0.5, 0.5, 0.5)
  x[0, 0, 7] = (2.0, -2.0, 0.0)  # non-zero but sums to 0: masked out
  out = pp.agcn_pre_normalization(x, zaxis=(0, 0), xaxis=(0, 0))
  np.testing.assert_array_equal(out[0, 0, 7], [0, 0, 0])
  np.testing.assert_allclose(out[0, 1, 7], [0.5, 0.5, 0.5])
  np.testing.assert_allclose(out[0, :, 1], 0)


def test_agcn_rotations_two_frame_toy_by_hand():
  # Spine v = j1 - j0 = (0, 1, 0): rotation 1 is +90 deg about v x z = x,
  # (x, y, z) -> (x, -z, y). Shoulders j8 - j4 = (0, 0, 1) become (0, -1, 0);
  # rotation 2 is +90 deg about (0, -1, 0) x x = (0, 0, 1),
  # (x, y, z) -> (-y, x, z). Together: (x, y, z) -> (z, x, y).
  rng = np.random.default_rng(0)
  x = np.zeros((2, 2, V, 3), np.float32)
  centres = np.array([[0.2, 0.1, 3.0], [0.3, 0.15, 2.9]], np.float32)
  for t in range(2):
    joints = rng.uniform(0.5, 1.5, size=(V, 3)).astype(np.float32)
    joints[1] = 0
    joints[0] = (0, -1, 0)
    joints[4] = (0.3, 0.5, -0.5)
    joints[8] = (0.3, 0.5, 0.5)
    x[0, t] = joints + centres[t]
    x[1, t] = rng.uniform(0.5, 1.5, size=(V, 3))
  out = pp.agcn_pre_normalization(x)
  centred = x - centres[None, :, None, :]  # person 0's joint 1 per frame
  want = centred[..., [2, 0, 1]]
  np.testing.assert_allclose(out, want, atol=1e-5)
  np.testing.assert_allclose(out[0, 0, 1] - out[0, 0, 0], [0, 0, 1], atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 8] - out[0, 0, 4], [1, 0, 0], atol=1e-6)


def test_rotation_matrix_matches_quaternion_form():
  rng = np.random.default_rng(1)
  for _ in range(5):
    axis = rng.normal(size=3)
    theta = rng.uniform(-3, 3)
    u = axis / np.linalg.norm(axis)
    # Unit quaternion (w, x, y, z) of a right-handed rotation, as a matrix.
    w, (b, c, d) = math.cos(theta / 2), u * math.sin(theta / 2)
    quat = np.array(
      [
        [
          w * w + b * b - c * c - d * d,
          2 * (b * c - w * d),
          2 * (b * d + w * c),
        ],
        [
          2 * (b * c + w * d),
          w * w - b * b + c * c - d * d,
          2 * (c * d - w * b),
        ],
        [
          2 * (b * d - w * c),
          2 * (c * d + w * b),
          w * w - b * b - c * c + d * d,
        ],
      ]
    )
    np.testing.assert_allclose(
      pp._rotation_matrix(axis, theta), quat, atol=1e-12
    )
  np.testing.assert_array_equal(
    pp._rotation_matrix([0, 0, 1e-7], 1.0), np.eye(3)
  )
  assert pp._angle_between([0, 0, 0], [1, 0, 0]) == 0
  assert pp._angle_between([0, 0, -2], [0, 0, 1]) == pytest.approx(math.pi)


def test_agcn_empty_sample_unchanged():
  x = np.zeros((2, 10, V, 3), np.float32)
  np.testing.assert_array_equal(pp.agcn_pre_normalization(x), x)


# ---------------------------------------------------------------------------
# Plain normalisation and the dispatcher.
# ---------------------------------------------------------------------------
def test_normalize_plain_origin_at_first_present_frame():
  x = np.zeros((3, 3, V, 3), np.float32)
  x[0, 1:] = np.arange(V * 3, dtype=np.float32).reshape(V, 3) + 1
  x[0, 2] += 10
  x[1, 2] = 5.0  # person 1 only in frame 2
  out = pp.normalize_plain(x)
  origin = x[0, 1, 1]
  assert not out[0, 0].any() and not out[1, :2].any() and not out[2].any()
  np.testing.assert_array_equal(out[0, 1, 1], [0, 0, 0])
  np.testing.assert_array_equal(out[0, 2], x[0, 2] - origin)
  np.testing.assert_array_equal(
    out[1, 2], np.broadcast_to(5.0 - origin, (V, 3))
  )
  # Without person 0 there is no anchor: unchanged.
  y = np.zeros_like(x)
  y[1] = 2.0
  np.testing.assert_array_equal(pp.normalize_plain(y), y)


def test_dispatcher():
  records = [(t, 0, _alternating(0.5, 8)[t] + 0.1 * t) for t in range(8)]
  records += [(t, 1, _alternating(0.2, 8)[t]) for t in range(8)]
  ex = _example(records, num_frames=8)
  dense = np.transpose(pp.to_dense(ex), (1, 0, 2, 3))
  np.testing.assert_array_equal(
    pp.preprocess(ex, 'plain'), pp.normalize_plain(dense)
  )
  np.testing.assert_array_equal(
    pp.preprocess(dense, 'plain'), pp.normalize_plain(dense)
  )
  np.testing.assert_array_equal(
    pp.preprocess(ex, 'aimclr', t_length=20),
    pp.aimclr_frame50(pp.aimclr_select_bodies(ex), t_length=20),
  )
  np.testing.assert_array_equal(
    pp.preprocess(ex, 'agcn', keep=1),
    pp.agcn_pre_normalization(pp.agcn_select_bodies(ex, keep=1)),
  )
  assert pp.preprocess(ex, 'agcn').shape == (2, 300, V, 3)
  with pytest.raises(ValueError, match=r"'plain', 'aimclr', 'agcn'"):
    pp.preprocess(ex, 'ctrgcn')
