"""Skeleton preprocessing families for NTU RGB+D (pure NumPy, deterministic).

Three incompatible conventions exist in the literature
(docs/data_and_eval.md §1.6);
numbers are only comparable within one family:

* ``plain``: translate so that person 0's spine-mid joint at its first present
  frame is the origin (our localization default; keeps root motion).
* ``aimclr``: ST-GCN/SkeletonCLR/AimCLR "frame50" data: first two bodies by
  in-frame position, 300 frames, joint-21-relative, bilinear resize of the
  valid frames to 50, per-frame rotation about y (A1 + A2).
* ``agcn``: 2s-AGCN ``pre_normalization`` (also used by BABEL and CMD): the two
  most energetic of up to four bodies, loop padding, centring on joint 2, two
  Rodrigues rotations (B1 + B2).

Dense arrays here are ``(M, T, V, 3)`` = (persons, frames, joints, xyz),
float32, with all-zero entries for absent persons/frames. ``to_dense`` instead
returns ``(T, M, V, 3)``, the stored layout of the other datasets. "Examples"
are the records of the ``ntu_rgbd`` TFDS builder (flattened body records, see
``data_builders/ntu_rgbd/README.md``).

The reference code is replicated step by step, including its float32 storage
between steps; results agree with it to float32 rounding (the references mix
float32 and float64 in ways that are not worth copying bit for bit). Where the
reference crashes or is nondeterministic, the rule chosen is documented on the
function.
"""

import math
from collections.abc import Mapping

import numpy as np

NUM_JOINTS = 25
MAX_FRAMES = 300  # the fixed length of every reference NTU array
FAMILIES = ('plain', 'aimclr', 'agcn')
# ``data.preprocess`` values: the families above plus 'aimclr_raw' (AimCLR's
# A1 stage only: first two bodies, 300 frames, as recorded).
CONFIG_FAMILIES = ('plain', 'aimclr', 'aimclr_raw', 'agcn')


# ---------------------------------------------------------------------------
# Raw example -> dense arrays.
# ---------------------------------------------------------------------------
def to_dense(example, max_bodies=None) -> np.ndarray:
  """Dense ``(T, M, 25, 3)`` float32 xyz of an ``ntu_rgbd`` example.

  Bodies are placed by their position within each frame (``body_slot``), not
  tracked by ``body_id``: slot m of frame t is the m-th body listed in frame t.
  Absent bodies and zero-body frames are zeros. T is the header frame count.

  Args:
    example: A record with ``num_frames``, ``body_frame``, ``body_slot`` and
      ``bodies_xyz``.
    max_bodies: M; bodies at later positions are dropped. ``None`` uses the
      largest body count of any frame (at least 1, so the result is never
      empty along M).
  """
  num_frames = int(example['num_frames'])
  frames = np.asarray(example['body_frame'], np.int64)
  slots = np.asarray(example['body_slot'], np.int64)
  xyz = np.asarray(example['bodies_xyz'], np.float32)
  if max_bodies is None:
    max_bodies = max(1, int(slots.max()) + 1 if slots.size else 1)
  out = np.zeros((num_frames, max_bodies, NUM_JOINTS, 3), np.float32)
  keep = slots < max_bodies
  out[frames[keep], slots[keep]] = xyz[keep]
  return out


def _slot_array(example, num_slots, max_frames=MAX_FRAMES):
  """``(num_slots, max_frames, 25, 3)``: the first bodies by in-frame position,
  zero-padded, frames beyond ``max_frames`` dropped."""
  frames = np.asarray(example['body_frame'], np.int64)
  slots = np.asarray(example['body_slot'], np.int64)
  xyz = np.asarray(example['bodies_xyz'], np.float32)
  out = np.zeros((num_slots, max_frames, NUM_JOINTS, 3), np.float32)
  keep = (slots < num_slots) & (frames < max_frames)
  out[slots[keep], frames[keep]] = xyz[keep]
  return out


# ---------------------------------------------------------------------------
# (A) SkeletonCLR / AimCLR.
# ---------------------------------------------------------------------------
def aimclr_select_bodies(example, max_frames=MAX_FRAMES) -> np.ndarray:
  """A1 (AimCLR ``tools/ntu_gendata.py``): ``(2, 300, 25, 3)`` float32.

  The first two bodies listed in each frame, by position (no energy ranking,
  no ``bodyID`` tracking); a third or later body is dropped. Frames after
  ``num_frames`` and absent bodies are zero.

  Deliberate choice: samples longer than 300 frames are truncated to their
  first 300 frames (the reference crashes on them with a shape error; NTU
  itself has none).
  """
  return _slot_array(example, 2, max_frames)


def _opencv_linear_time_resize(x, length, t_length):
  """Resizes frames ``[0, length)`` of ``x`` (T, ...) to ``t_length`` frames
  the way ``cv2.resize(..., INTER_LINEAR)`` does along the image height.

  Half-pixel centres ``src = (dst + 0.5) * scale - 0.5`` with
  ``scale = 1 / (t_length / length)`` in double, rounded to float32 as OpenCV
  does, then rows ``floor(src)`` and ``floor(src) + 1`` clamped to
  ``[0, length - 1]`` are blended with float32 weights ``1 - frac`` and
  ``frac``. The width (joints) has scale 1, so joints and xyz are not mixed.
  """
  scale = 1.0 / (t_length / length)
  src = ((np.arange(t_length, dtype=np.float64) + 0.5) * scale - 0.5).astype(
    np.float32
  )
  lo = np.floor(src)
  frac = (src - lo).astype(np.float32)
  lo = lo.astype(np.int64)
  i0 = np.clip(lo, 0, length - 1)
  i1 = np.clip(lo + 1, 0, length - 1)
  shape = (t_length,) + (1,) * (x.ndim - 1)
  w1 = frac.reshape(shape)
  w0 = (np.float32(1) - frac).reshape(shape)
  return (x[i0] * w0 + x[i1] * w1).astype(np.float32)


def _aimclr_y_rotation(person):
  """AimCLR ``parallel_skeleton`` on one person ``(T, V, 3)``.

  v_t = joint 8 - joint 4 (0-based: right - left shoulder) with y set to 0,
  theta_t = arccos(v_x / (|v_t| + 1e-4)); if the sum over all frames of v_z
  is >= 0 every theta_t is negated (one sign for the whole sequence). Each
  frame is rotated by R_y(theta_t) = [[c, 0, -s], [0, 1, 0], [s, 0, c]].
  The float32 degree round trip of the reference is kept.
  """
  vec = person[:, 8] - person[:, 4]  # (T, 3) float32
  vec[:, 1] = 0
  norm = np.sqrt(np.sum(np.square(vec), axis=1))
  cos_t = vec[:, 0] / (norm + np.float32(0.0001))
  degrees = np.arccos(cos_t) * np.float32(180 / np.pi)
  if np.sum(vec[:, 2]) >= 0:
    degrees = -degrees
  theta = degrees * np.float32(np.pi) / np.float32(180)
  c = np.cos(theta).astype(np.float64)
  s = np.sin(theta).astype(np.float64)
  rot = np.zeros((len(theta), 3, 3))
  rot[:, 0, 0], rot[:, 0, 2] = c, -s
  rot[:, 1, 1] = 1
  rot[:, 2, 0], rot[:, 2, 2] = s, c
  return np.einsum('tij,tvj->tvi', rot, person.astype(np.float64)).astype(
    np.float32
  )


def aimclr_valid_length(x) -> int:
  """Frames (of all T) where person 0's joint 0 is non-zero (|x|+|y|+|z| > 0).

  Counts non-zero frames anywhere, not a prefix (AimCLR ``get_length``).
  """
  return int(np.count_nonzero(np.abs(x[0, :, 0, :]).sum(-1) != 0))


def aimclr_frame50(x, t_length=50, y_rotation=True, with_motion=False):
  """A2: AimCLR ``NTUMotionProcessor`` (relative, resize, y_rotation).

  Steps, in the reference order:
    1. L = ``aimclr_valid_length(x)``.
    2. Motion m[t] = x[t+1] - x[t] on the raw array (last frame 0).
    3. Relative coordinates: every joint minus the same person's joint index
       20 (joint 21) in the same frame; absent persons/frames stay zero.
    4. Frames ``[0, L)`` (a prefix, even if the non-zero frames are not) of
       each person are resized to ``t_length`` with OpenCV INTER_LINEAR
       semantics (``_opencv_linear_time_resize``); motion likewise, same L.
    5. If ``y_rotation``: ``_aimclr_y_rotation`` per person and frame
       (position only, motion is not rotated).

  Deliberate choices: every person is rotated (the reference loops over its
  two); L = 0 (person 0 absent) returns zeros, where the reference crashes.

  Args:
    x: ``(M, T, V, 3)``, e.g. from ``aimclr_select_bodies``.
    t_length: Output frames (50 in AimCLR).
    y_rotation: Apply step 5.
    with_motion: Also return the resized motion stream.

  Returns:
    float32 ``(M, t_length, V, 3)``, or ``(position, motion)``.
  """
  x = np.asarray(x, np.float32)
  num_persons, _, num_joints, _ = x.shape
  length = aimclr_valid_length(x)
  motion = np.zeros_like(x)
  motion[:, :-1] = x[:, 1:] - x[:, :-1]
  out_shape = (num_persons, t_length, num_joints, 3)
  if length == 0:
    zeros = np.zeros(out_shape, np.float32)
    return (zeros, zeros.copy()) if with_motion else zeros
  relative = x - x[:, :, 20:21]
  position = np.stack(
    [_opencv_linear_time_resize(p[:length], length, t_length) for p in relative]
  )
  motion = np.stack(
    [_opencv_linear_time_resize(p[:length], length, t_length) for p in motion]
  )
  if y_rotation:
    position = np.stack([_aimclr_y_rotation(p) for p in position])
  return (position, motion) if with_motion else position


# ---------------------------------------------------------------------------
# (B) 2s-AGCN.
# ---------------------------------------------------------------------------
def _agcn_energy(body):
  """std(x) + std(y) + std(z) (population) over the valid frames x 25 joints.

  A frame is valid if its coordinate *sum* is non-zero (reference test);
  no valid frame gives energy 0. Computed in float64.
  """
  body = body.astype(np.float64)
  valid = body.sum(axis=(1, 2)) != 0
  if not valid.any():
    return 0.0
  body = body[valid]
  return float(sum(body[..., c].std() for c in range(3)))


def agcn_select_bodies(
  example, max_body_kinect=4, keep=2, max_frames=MAX_FRAMES
):
  """B1 (2s-AGCN ``read_xyz``): the ``keep`` most energetic of the first
  ``max_body_kinect`` body slots, as ``(keep, 300, 25, 3)`` float32.

  Slots are in-frame positions (as in A1). Energy: ``_agcn_energy``. Order:
  energy descending, slot 0 = most energetic.

  Deliberate choices:
    * Ties (typically several empty slots at energy 0) follow the reference's
      ``argsort()[::-1]`` under NumPy's insertion sort for short arrays, made
      explicit with a stable sort: among equal energies the *higher* slot index
      comes first.
    * Samples longer than 300 frames are truncated before the energy is
      computed (the reference crashes on them), so the ranking only sees the
      frames that are kept.
  """
  slots = _slot_array(example, max_body_kinect, max_frames)
  energy = np.array([_agcn_energy(b) for b in slots])
  order = np.argsort(energy, kind='stable')[::-1][:keep]
  return slots[order]


def _angle_between(v1, v2):
  """2s-AGCN ``angle_between``: 0 if either vector has L1 norm < 1e-6, else
  arccos of the clipped dot product of the unit vectors."""
  v1 = np.asarray(v1, np.float64)
  v2 = np.asarray(v2, np.float64)
  if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
    return 0.0
  u1 = v1 / np.linalg.norm(v1)
  u2 = v2 / np.linalg.norm(v2)
  return float(np.arccos(np.clip(np.dot(u1, u2), -1.0, 1.0)))


def _rotation_matrix(axis, theta):
  """Right-handed (counter-clockwise) rotation by ``theta`` about ``axis``.

  Rodrigues' formula R = cos(t) I + sin(t) [u]x + (1 - cos(t)) u u^T; equal to
  the quaternion form of 2s-AGCN ``rotation_matrix``. Identity if the L1 norm
  of the (unnormalised) axis or |theta| is below 1e-6, as there.
  """
  axis = np.asarray(axis, np.float64)
  if np.abs(axis).sum() < 1e-6 or abs(theta) < 1e-6:
    return np.eye(3)
  u = axis / math.sqrt(np.dot(axis, axis))
  cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
  return (
    math.cos(theta) * np.eye(3)
    + math.sin(theta) * cross
    + (1 - math.cos(theta)) * np.outer(u, u)
  )


def _agcn_align(s, joint_from, joint_to, target):
  """Rotates every non-zero frame of every non-empty person so that person
  0's ``joint_to - joint_from`` at frame 0 points along ``target``."""
  v = (s[0, 0, joint_to] - s[0, 0, joint_from]).astype(np.float64)  # f32 diff
  rot = _rotation_matrix(np.cross(v, target), _angle_between(v, target))
  for p in range(s.shape[0]):
    if s[p].sum() == 0:
      continue
    frames = s[p].sum(axis=(1, 2)) != 0
    s[p, frames] = (s[p, frames].astype(np.float64) @ rot.T).astype(np.float32)


def agcn_pre_normalization(x, zaxis=(0, 1), xaxis=(8, 4)) -> np.ndarray:
  """B2: 2s-AGCN ``pre_normalization`` of one sample ``(M, T, V, 3)``.

  Every "is zero" test is on plain (signed) float32 sums, as in the reference.
    1. Padding, per person with a non-zero sum: if frame 0 is zero, all zero
       frames are removed and the rest shifted to the front. Then, at the
       first zero frame f whose suffix [f, T) sums to zero, frames f..T-1 are
       filled by repeating frames [0, f) cyclically. Zero frames followed by
       non-zero ones stay zero.
    2. Centring: c_t = person 0's joint 1 at frame t; every non-empty person
       becomes (p - c_t) * mask, mask = joint coordinate sum != 0 (taken
       before subtracting; a joint summing to exactly 0 is zeroed).
    3. Rotation 1: person 0's joint[zaxis[1]] - joint[zaxis[0]] at frame 0 is
       rotated onto +z (``_rotation_matrix`` about v x z by angle(v, z)).
    4. Rotation 2: likewise joint[xaxis[0]] - joint[xaxis[1]] (right - left
       shoulder), measured after step 3, onto +x.
    Rotations apply to every non-zero frame of every non-empty person. An
    all-zero sample is returned unchanged.

  Deliberate choice: a person whose padding would repeat an empty prefix
  (f = 0, only possible when sums cancel exactly) is left as is; the
  reference divides by zero.
  """
  s = np.array(x, np.float32, copy=True)
  num_frames = s.shape[1]
  for p in range(s.shape[0]):
    person = s[p]  # a view: edits write through, as in the reference
    if person.sum() == 0:
      continue
    if person[0].sum() == 0:
      valid = person.sum(axis=(1, 2)) != 0
      kept = person[valid].copy()
      person[:] = 0
      person[: len(kept)] = kept
    for f in range(num_frames):
      if person[f].sum() == 0 and person[f:].sum() == 0:
        if f > 0:
          reps = -(-(num_frames - f) // f)
          person[f:] = np.concatenate([person[:f]] * reps)[: num_frames - f]
        break
  if s.sum() == 0:
    return s
  center = s[0, :, 1:2].copy()
  for p in range(s.shape[0]):
    if s[p].sum() == 0:
      continue
    mask = (s[p].sum(-1) != 0)[..., None]
    s[p] = (s[p] - center) * mask
  if s.sum() == 0:
    return s
  _agcn_align(s, zaxis[0], zaxis[1], np.array([0.0, 0.0, 1.0]))
  if s.sum() == 0:
    return s
  _agcn_align(s, xaxis[1], xaxis[0], np.array([1.0, 0.0, 0.0]))
  return s


# ---------------------------------------------------------------------------
# Plain normalisation.
# ---------------------------------------------------------------------------
def normalize_plain(x, center_joint=1) -> np.ndarray:
  """Translates ``(M, T, V, 3)`` so that person 0's ``center_joint`` (spine
  middle) at person 0's first present frame is the origin.

  Root motion (walking, jumping) is kept, unlike per-frame centring. Absent
  persons and frames where a person is absent (all zero) stay zero, so padding
  stays recognisable. If person 0 is absent throughout, ``x`` is returned
  unchanged (as float32): there is no anchor.

  Deliberate choice: the origin is taken at the first frame where person 0 is
  present, not frame 0, so a sample starting with empty frames is not shifted
  by a zero origin (CTR-GCN uses the same rule).
  """
  x = np.asarray(x, np.float32)
  present = np.any(x != 0, axis=(2, 3))  # (M, T)
  if not present[0].any():
    return x.copy()
  origin = x[0, int(np.argmax(present[0])), center_joint]
  return np.where(present[..., None, None], x - origin, 0).astype(np.float32)


# ---------------------------------------------------------------------------
# Dispatcher.
# ---------------------------------------------------------------------------
def preprocess(x_or_example, family: str, **kwargs) -> np.ndarray:
  """Applies one family to a dense ``(M, T, V, 3)`` array or a raw example.

  * ``'plain'``: example -> ``to_dense`` (kwarg ``max_bodies``) transposed to
    (M, T, V, 3); then ``normalize_plain`` (kwarg ``center_joint``).
  * ``'aimclr'``: example -> ``aimclr_select_bodies``; then ``aimclr_frame50``
    (kwargs ``t_length``, ``y_rotation``, ``with_motion``). An array is taken
    as already selected.
  * ``'agcn'``: example -> ``agcn_select_bodies`` (kwargs ``max_body_kinect``,
    ``keep``); then ``agcn_pre_normalization`` (kwargs ``zaxis``, ``xaxis``).
    An array is taken as already selected.

  Raises:
    ValueError: unknown family.
  """
  if family not in FAMILIES:
    raise ValueError(
      f'unknown preprocessing family {family!r}; expected one '
      f'of {list(FAMILIES)}'
    )
  is_example = isinstance(x_or_example, Mapping)
  if family == 'plain':
    max_bodies = kwargs.pop('max_bodies', None)
    x = (
      np.transpose(to_dense(x_or_example, max_bodies), (1, 0, 2, 3))
      if is_example
      else x_or_example
    )
    return normalize_plain(x, **kwargs)
  if family == 'aimclr':
    x = aimclr_select_bodies(x_or_example) if is_example else x_or_example
    return aimclr_frame50(x, **kwargs)
  select = {
    k: kwargs.pop(k) for k in ('max_body_kinect', 'keep') if k in kwargs
  }
  x = agcn_select_bodies(x_or_example, **select) if is_example else x_or_example
  return agcn_pre_normalization(x, **kwargs)
