"""Procedural NTU-25 skeleton sequences for temporal action localization.

Pure NumPy; no TFDS or JAX import so it can be used (and tested) on its own.

Every frame is produced by forward kinematics from a small vector of joint
angles (``q`` below), so bone lengths are constant within a sequence and only
the additive sensor noise perturbs them. A sequence is a timeline of idle
background stretches (sway, breathing, small fidgets) and action segments; each
action is a parametric motion of the angle vector that starts and ends at the
neutral pose and is faded in/out over a few frames so segments chain smoothly.

Coordinates follow the Kinect v2 camera space used by NTU RGB+D: metres,
``y`` up, ``z`` = depth away from the sensor, ``x`` towards the sensor's left
(i.e. a subject facing the camera has their right side at larger ``x``).
"""

import dataclasses

import numpy as np

from skel_jax import graph

CLASS_NAMES = (
  'walk',
  'wave',
  'jump',
  'squat',
  'kick',
  'turn',
  'clap',
  'punch',
  'bow',
  'raise_arms',
)
NUM_CLASSES = len(CLASS_NAMES)
BACKGROUND = NUM_CLASSES  # last label index


@dataclasses.dataclass(frozen=True)
class SequenceSpec:
  """Knobs of the generator.

  Attributes:
    min_frames: Shortest sequence (inclusive).
    max_frames: Longest sequence (inclusive).
    noise_std: Std (metres) of the i.i.d. per-joint Gaussian sensor noise.
      Hands, thumbs, hand tips and feet get 1.5x, as with a real Kinect.
    min_segment: Shortest action segment in frames (before truncation to fit).
    max_segment: Longest action segment in frames.
    min_gap: Shortest background stretch between actions.
    max_gap: Longest background stretch between actions.
    tempo_range: Range of the per-segment tempo; cycle lengths (a step, a wave,
      a punch) are divided by it, so faster subjects fit more cycles.
    scale_range: Range of the per-sequence body scale.
    bone_jitter: Relative per-bone length jitter (left/right symmetric).
    ramp_frames: (min, max) frames of the fade in/out at each action edge.
    fidget_prob: Probability that a background gap contains a small fidget.
    fps: Frame rate used to convert seconds to frames.
  """

  min_frames: int = 200
  max_frames: int = 320
  noise_std: float = 0.008
  min_segment: int = 30
  max_segment: int = 100
  min_gap: int = 10
  max_gap: int = 60
  tempo_range: tuple[float, float] = (0.8, 1.25)
  scale_range: tuple[float, float] = (0.85, 1.15)
  bone_jitter: float = 0.05
  ramp_frames: tuple[int, int] = (4, 10)
  fidget_prob: float = 0.6
  fps: float = 30.0

  def __post_init__(self):
    if not 0 < self.min_frames <= self.max_frames:
      raise ValueError('Need 0 < min_frames <= max_frames.')
    if self.min_frames < self.min_gap + self.min_segment:
      raise ValueError('min_frames must fit one gap and one action segment.')
    if not 0 < self.min_segment <= self.max_segment:
      raise ValueError('Need 0 < min_segment <= max_segment.')
    if not 0 < self.min_gap <= self.max_gap:
      raise ValueError('Need 0 < min_gap <= max_gap.')


# ---------------------------------------------------------------------------
# The angle vector. Left/right channels share conventions: positive flexion
# moves a limb forward, positive abduction moves it away from the midline,
# positive external rotation turns the elbow's bending plane outwards.
# The last three channels are velocities (integrated over time) so that turns
# and walks leave the subject at a new heading / position.
# ---------------------------------------------------------------------------
_CHANNELS = (
  'hip_flex_l',
  'hip_abd_l',
  'knee_l',
  'hip_flex_r',
  'hip_abd_r',
  'knee_r',
  'sh_flex_l',
  'sh_abd_l',
  'sh_ext_l',
  'elbow_l',
  'sh_flex_r',
  'sh_abd_r',
  'sh_ext_r',
  'elbow_r',
  'torso_bend',
  'torso_side',
  'torso_twist',
  'neck_flex',
  'head_yaw',
  'root_height',
  'yaw_rate',
  'fwd_speed',
  'lat_speed',
)
_C = {name: i for i, name in enumerate(_CHANNELS)}
NUM_CHANNELS = len(_CHANNELS)

# Mirroring a motion (x -> -x) swaps left/right channels and negates the
# channels that rotate about the vertical or sagittal axes.
_MIRROR_PERM = np.arange(NUM_CHANNELS)
for _name in _CHANNELS:
  if _name.endswith('_l'):
    _MIRROR_PERM[_C[_name]] = _C[_name[:-2] + '_r']
    _MIRROR_PERM[_C[_name[:-2] + '_r']] = _C[_name]
_MIRROR_SIGN = np.ones(NUM_CHANNELS)
for _name in ('torso_side', 'torso_twist', 'head_yaw', 'yaw_rate', 'lat_speed'):
  _MIRROR_SIGN[_C[_name]] = -1.0


def _mirror(q):
  return q[:, _MIRROR_PERM] * _MIRROR_SIGN


# ---------------------------------------------------------------------------
# Rest skeleton.
# ---------------------------------------------------------------------------
# Nominal bone lengths (metres) for a ~1.75 m adult.
_LENGTHS = {
  'pelvis_spine': 0.28,  # spine_base -> spine_mid
  'spine_chest': 0.25,  # spine_mid -> spine_shoulder
  'neck': 0.08,
  'head': 0.13,
  'upper_arm': 0.28,
  'forearm': 0.25,
  'hand': 0.07,
  'hand_tip': 0.06,
  'thigh': 0.42,
  'shin': 0.40,
}
_SHOULDER_OFFSET = np.array([0.17, -0.04, 0.0])  # from spine_shoulder (right)
_HIP_OFFSET = np.array([0.08, -0.07, 0.0])  # from spine_base (right)
_THUMB_OFFSET = np.array([-0.02, -0.035, -0.025])  # from hand, hand frame
_FOOT_OFFSET = np.array([0.0, -0.05, -0.11])  # from ankle, foot frame
_ANKLE_HEIGHT = 0.08


@dataclasses.dataclass(frozen=True)
class _Body:
  lengths: dict
  shoulder: np.ndarray
  hip: np.ndarray
  thumb: np.ndarray
  foot: np.ndarray
  ankle_height: float


def _sample_body(rng, spec):
  scale = rng.uniform(*spec.scale_range)
  jit = lambda: scale * rng.uniform(1 - spec.bone_jitter, 1 + spec.bone_jitter)
  lengths = {k: v * jit() for k, v in _LENGTHS.items()}
  return _Body(
    lengths=lengths,
    shoulder=_SHOULDER_OFFSET * jit(),
    hip=_HIP_OFFSET * jit(),
    thumb=_THUMB_OFFSET * jit(),
    foot=_FOOT_OFFSET * jit(),
    ankle_height=_ANKLE_HEIGHT * scale,
  )


# ---------------------------------------------------------------------------
# Forward kinematics (vectorised over frames).
# ---------------------------------------------------------------------------
def _rot(axis, angle):
  """(T, 3, 3) rotation matrices about a coordinate axis."""
  c, s = np.cos(angle), np.sin(angle)
  r = np.zeros(angle.shape + (3, 3))
  i, j = {'x': (1, 2), 'y': (2, 0), 'z': (0, 1)}[axis]
  k = 3 - i - j
  r[..., k, k] = 1.0
  r[..., i, i] = c
  r[..., j, j] = c
  r[..., i, j] = -s
  r[..., j, i] = s
  return r


def _apply(r, v):
  """Rotates a constant vector ``v`` (3,) by every matrix in ``r`` (T,3,3)."""
  return r @ v


_DOWN = np.array([0.0, -1.0, 0.0])
_UP = np.array([0.0, 1.0, 0.0])


def _leg_frames(q, side):
  """Thigh, shin and foot frames of one leg relative to the pelvis.

  ``side`` is +1 for the right leg (+x) and -1 for the left one; mirroring
  the z/y rotations makes both legs share the channel conventions.
  """
  sfx = '_r' if side > 0 else '_l'
  flex, abd, knee = (
    q[:, _C['hip_flex' + sfx]],
    q[:, _C['hip_abd' + sfx]],
    q[:, _C['knee' + sfx]],
  )
  thigh = _rot('x', flex) @ _rot('z', side * abd)
  shin = thigh @ _rot('x', -knee)
  # A partly compensating ankle keeps the foot roughly level.
  foot = shin @ _rot('x', -0.7 * (flex - knee))
  return thigh, shin, foot


def _arm_frames(q, side):
  """Upper-arm and forearm frames relative to the chest."""
  sfx = '_r' if side > 0 else '_l'
  upper = (
    _rot('x', q[:, _C['sh_flex' + sfx]])
    @ _rot('z', side * q[:, _C['sh_abd' + sfx]])
    @ _rot('y', -side * q[:, _C['sh_ext' + sfx]])
  )
  fore = upper @ _rot('x', q[:, _C['elbow' + sfx]])
  return upper, fore


def _forward_kinematics(q, root, yaw, body):
  """Joint positions (T, 25, 3) in the room frame (y up, floor at 0)."""
  t = q.shape[0]
  ln = body.lengths
  mirror = np.array([-1.0, 1.0, 1.0])
  joints = np.zeros((t, graph.NUM_JOINTS, 3))
  r_yaw = _rot('y', yaw)

  # Spine: bend/side/twist split evenly over the two spine segments.
  half = (
    _rot('y', 0.5 * q[:, _C['torso_twist']])
    @ _rot('x', -0.5 * q[:, _C['torso_bend']])
    @ _rot('z', 0.5 * q[:, _C['torso_side']])
  )
  r_lower = r_yaw @ half
  r_upper = r_lower @ half
  r_head = (
    r_upper
    @ _rot('x', -q[:, _C['neck_flex']])
    @ _rot('y', q[:, _C['head_yaw']])
  )
  joints[:, 0] = root
  joints[:, 1] = joints[:, 0] + _apply(r_lower, _UP * ln['pelvis_spine'])
  joints[:, 20] = joints[:, 1] + _apply(r_upper, _UP * ln['spine_chest'])
  joints[:, 2] = joints[:, 20] + _apply(r_head, _UP * ln['neck'])
  joints[:, 3] = joints[:, 2] + _apply(r_head, _UP * ln['head'])

  # Arms: (shoulder, elbow, wrist, hand, hand_tip, thumb) joint ids.
  for side, ids in ((1, (8, 9, 10, 11, 23, 24)), (-1, (4, 5, 6, 7, 21, 22))):
    m = np.ones(3) if side > 0 else mirror
    upper, fore = _arm_frames(q, side)
    upper, fore = r_upper @ upper, r_upper @ fore
    sh, el, wr, ha, tip, th = ids
    joints[:, sh] = joints[:, 20] + _apply(r_upper, body.shoulder * m)
    joints[:, el] = joints[:, sh] + _apply(upper, _DOWN * ln['upper_arm'])
    joints[:, wr] = joints[:, el] + _apply(fore, _DOWN * ln['forearm'])
    joints[:, ha] = joints[:, wr] + _apply(fore, _DOWN * ln['hand'])
    joints[:, tip] = joints[:, ha] + _apply(fore, _DOWN * ln['hand_tip'])
    joints[:, th] = joints[:, ha] + _apply(fore, body.thumb * m)

  # Legs: (hip, knee, ankle, foot) joint ids; the pelvis only yaws.
  for side, ids in ((1, (16, 17, 18, 19)), (-1, (12, 13, 14, 15))):
    m = np.ones(3) if side > 0 else mirror
    thigh, shin, foot = (r_yaw @ f for f in _leg_frames(q, side))
    hp, kn, an, ft = ids
    joints[:, hp] = joints[:, 0] + _apply(r_yaw, body.hip * m)
    joints[:, kn] = joints[:, hp] + _apply(thigh, _DOWN * ln['thigh'])
    joints[:, an] = joints[:, kn] + _apply(shin, _DOWN * ln['shin'])
    joints[:, ft] = joints[:, an] + _apply(foot, body.foot * m)
  return joints


def _root_height(q, body):
  """Pelvis height that keeps the lower ankle on the floor (plus jumps)."""
  ln = body.lengths
  drops = []
  for side in (1, -1):
    thigh, shin, _ = _leg_frames(q, side)
    drop = -(
      body.hip[1] + thigh[:, 1, 1] * -ln['thigh'] + shin[:, 1, 1] * -ln['shin']
    )
    drops.append(drop)
  return np.maximum(*drops) + body.ankle_height + q[:, _C['root_height']]


# ---------------------------------------------------------------------------
# Motion primitives. Each takes the warped phase ``u`` in [0, 1] (one value
# per frame of the segment) and returns (D, NUM_CHANNELS) offsets from the
# neutral pose, written for the right-hand side; mirroring handles the left.
# ---------------------------------------------------------------------------
def _bump(p, a=0.0, b=1.0):
  """Smooth (C1) bump: sin^2 on [a, b], zero elsewhere."""
  x = np.clip((p - a) / (b - a), 0.0, 1.0)
  return np.sin(np.pi * x) ** 2


def _plateau(p, rise, fall):
  """Smooth 0 -> 1 -> 0 with a hold between ``rise`` and ``fall``."""
  up = _smoothstep(np.clip(p / rise, 0.0, 1.0))
  down = _smoothstep(np.clip((1.0 - p) / (1.0 - fall), 0.0, 1.0))
  return up * down


def _smoothstep(x):
  return x * x * (3.0 - 2.0 * x)


def _cycles(rng, d, cycle_frames, tempo, lo=1, hi=8):
  """Whole number of cycles that fits ``d`` frames at the given tempo."""
  n = int(round(d * tempo / cycle_frames * rng.uniform(0.85, 1.15)))
  return int(np.clip(n, lo, hi))


def _rise(d, frames=16.0):
  """Fraction of a segment spent raising a limb into position (~0.5 s)."""
  return float(np.clip(frames / d, 0.15, 0.4))


def _walk(u, d, rng, ctx):
  q = np.zeros((d, NUM_CHANNELS))
  n = _cycles(rng, d, 32.0, ctx['tempo'], lo=1, hi=6)
  th = 2 * np.pi * n * u + rng.choice([0.0, np.pi])  # lead leg
  amp = rng.uniform(0.3, 0.5)
  knee = rng.uniform(0.6, 1.0)
  arm = rng.uniform(0.15, 0.45)
  for s, sfx in ((1.0, '_r'), (-1.0, '_l')):
    q[:, _C['hip_flex' + sfx]] = s * amp * np.sin(th)
    # The knee bends in the swing phase, peaking as the thigh passes vertical.
    q[:, _C['knee' + sfx]] = knee * ((1 + s * np.cos(th)) / 2) ** 3
    q[:, _C['sh_flex' + sfx]] = -s * arm * np.sin(th)
    q[:, _C['elbow' + sfx]] = 0.2 + 0.15 * (1 - s * np.sin(th))
  q[:, _C['torso_twist']] = 0.08 * amp * np.sin(th)
  q[:, _C['torso_bend']] = rng.uniform(0.0, 0.1)
  dist, dyaw = ctx['walk_plan'](d)
  q[:, _C['fwd_speed']] = dist / d
  q[:, _C['yaw_rate']] = dyaw / d
  return q


def _wave(u, d, rng, ctx):
  q = np.zeros((d, NUM_CHANNELS))
  r = _rise(d)
  # The oscillation only runs while the arm is up, so count cycles there.
  n = _cycles(rng, d * (1 - 2 * r), 18.0, ctx['tempo'], lo=1, hi=6)
  hold = _plateau(u, r, 1 - r)
  v = np.clip((u - r) / (1 - 2 * r), 0, 1)
  # Forearm swings side to side about a bent elbow while the arm is up.
  swing = rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * n * v) * hold
  elbow = rng.uniform(1.0, 1.6) * hold
  q[:, _C['sh_abd_r']] = rng.uniform(1.0, 1.6) * hold
  q[:, _C['sh_flex_r']] = rng.uniform(0.0, 0.6) * hold
  q[:, _C['sh_ext_r']] = rng.uniform(1.2, 1.6) * hold
  q[:, _C['elbow_r']] = elbow + swing
  if rng.uniform() < 0.15:  # occasionally a two-handed wave, in anti-phase
    for ch in ('sh_abd', 'sh_flex', 'sh_ext'):
      q[:, _C[ch + '_l']] = q[:, _C[ch + '_r']]
    q[:, _C['elbow_l']] = elbow - swing
  q[:, _C['torso_side']] = -0.05 * hold
  return q


def _jump(u, d, rng, ctx):
  q = np.zeros((d, NUM_CHANNELS))
  n = _cycles(rng, d, 40.0, ctx['tempo'], lo=1, hi=3)
  p = (u * n) % 1.0
  p[-1] = 1.0  # end exactly at the neutral pose
  crouch = rng.uniform(0.6, 1.1)
  knee = crouch * (_bump(p, 0.0, 0.4) + 0.8 * _bump(p, 0.6, 1.0))
  knee += 0.2 * _bump(p, 0.35, 0.65)  # slightly tucked in flight
  for sfx in ('_r', '_l'):
    q[:, _C['knee' + sfx]] = knee
    q[:, _C['hip_flex' + sfx]] = 0.55 * knee
  q[:, _C['torso_bend']] = 0.35 * knee
  # Ballistic apex height for the flight time: h = g t^2 / 8.
  flight_s = 0.24 * d / n / ctx['fps']
  height = float(np.clip(9.81 * flight_s**2 / 8, 0.04, 0.35))
  q[:, _C['root_height']] = height * _bump(p, 0.38, 0.62)
  if rng.uniform() < 0.6:  # arm swing: back in the crouch, up in flight
    swing = -0.4 * _bump(p, 0.0, 0.4) + rng.uniform(0.8, 1.8) * _bump(
      p, 0.2, 0.85
    )
    q[:, _C['sh_flex_r']] = q[:, _C['sh_flex_l']] = swing
  return q


def _squat(u, d, rng, ctx):
  q = np.zeros((d, NUM_CHANNELS))
  n = _cycles(rng, d, 55.0, ctx['tempo'], lo=1, hi=3)
  p = (u * n) % 1.0
  p[-1] = 1.0
  depth = rng.uniform(1.2, 2.0) * _plateau(p, 0.4, 0.6)
  for sfx in ('_r', '_l'):
    q[:, _C['knee' + sfx]] = depth
    q[:, _C['hip_flex' + sfx]] = rng.uniform(0.7, 0.9) * depth
    q[:, _C['hip_abd' + sfx]] = 0.1 * depth
  q[:, _C['torso_bend']] = rng.uniform(0.2, 0.4) * depth
  if rng.uniform() < 0.5:  # arms forward for balance
    arms = rng.uniform(0.6, 0.9) * depth
    q[:, _C['sh_flex_r']] = q[:, _C['sh_flex_l']] = arms
  return q


def _kick(u, d, rng, ctx):
  q = np.zeros((d, NUM_CHANNELS))
  n = _cycles(rng, d, 35.0, ctx['tempo'], lo=1, hi=3)
  p = (u * n) % 1.0
  p[-1] = 1.0
  lift = _bump(p, 0.05, 0.95)
  # Chambered kick: the knee bends while lifting and snaps straight at the top.
  snap = np.exp(-(((p - 0.5) / 0.12) ** 2))
  q[:, _C['hip_flex_r']] = rng.uniform(0.8, 1.5) * lift
  q[:, _C['knee_r']] = rng.uniform(0.8, 1.6) * lift * (1 - snap)
  q[:, _C['torso_bend']] = -rng.uniform(0.05, 0.25) * lift
  bal = rng.uniform(0.1, 0.5) * lift
  q[:, _C['sh_abd_r']] = q[:, _C['sh_abd_l']] = bal
  q[:, _C['elbow_r']] = q[:, _C['elbow_l']] = 0.5 * bal
  return q


def _turn(u, d, rng, ctx):
  q = np.zeros((d, NUM_CHANNELS))
  dyaw = ctx['turn_angle']()
  # Yaw follows a smoothstep; its per-frame increment is the rate.
  yaw = dyaw * _smoothstep(u)
  q[:, _C['yaw_rate']] = np.diff(yaw, prepend=0.0)
  n = _cycles(rng, d, 25.0, ctx['tempo'], lo=2, hi=5)
  th = 2 * np.pi * n * u
  step = rng.uniform(0.15, 0.35) * _plateau(u, 0.1, 0.9)
  for s, sfx in ((1.0, '_r'), (-1.0, '_l')):
    q[:, _C['hip_flex' + sfx]] = step * np.maximum(s * np.sin(th), 0)
    q[:, _C['knee' + sfx]] = 2 * step * np.maximum(s * np.sin(th), 0)
  sign = np.sign(dyaw)
  q[:, _C['head_yaw']] = sign * rng.uniform(0.1, 0.4) * _bump(u, 0.0, 0.7)
  q[:, _C['torso_twist']] = sign * rng.uniform(0.05, 0.2) * _bump(u, 0.0, 0.8)
  return q


def _clap(u, d, rng, ctx):
  q = np.zeros((d, NUM_CHANNELS))
  r = _rise(d)
  n = _cycles(rng, d * (1 - 2 * r), 12.0, ctx['tempo'], lo=2, hi=8)
  hold = _plateau(u, r, 1 - r)
  v = np.clip((u - r) / (1 - 2 * r), 0, 1)
  osc = 0.5 * (1 - np.cos(2 * np.pi * n * v)) * hold
  flex = rng.uniform(0.9, 1.5)
  for sfx in ('_r', '_l'):
    q[:, _C['sh_flex' + sfx]] = flex * hold
    # Adducted hands meet at the midline, abduction opens them.
    q[:, _C['sh_abd' + sfx]] = -0.28 * hold + rng.uniform(0.25, 0.5) * osc
    q[:, _C['elbow' + sfx]] = rng.uniform(0.5, 1.0) * hold
  return q


def _punch(u, d, rng, ctx):
  q = np.zeros((d, NUM_CHANNELS))
  r = _rise(d)
  n = _cycles(rng, d * (1 - 2 * r), 22.0, ctx['tempo'], lo=1, hi=4)
  guard = _plateau(u, r, 1 - r)
  v = np.clip((u - r) / (1 - 2 * r), 0, 1)
  alternate = rng.uniform() < 0.5
  for sfx, offset in (('_r', 0.0), ('_l', 0.5)):
    q[:, _C['sh_flex' + sfx]] = 0.6 * guard
    q[:, _C['sh_abd' + sfx]] = 0.2 * guard
    q[:, _C['elbow' + sfx]] = 2.0 * guard
    if sfx == '_l' and not alternate:
      continue
    k = (v * n + offset) % 1.0 if alternate else (v * n) % 1.0
    # Strikes happen only while the guard is up.
    strike = _bump(k, 0.1, 0.7) * guard
    q[:, _C['sh_flex' + sfx]] += rng.uniform(0.7, 1.0) * strike
    q[:, _C['sh_abd' + sfx]] -= 0.2 * strike
    q[:, _C['elbow' + sfx]] -= rng.uniform(1.6, 1.9) * strike
    s = 1.0 if sfx == '_r' else -1.0
    q[:, _C['torso_twist']] += s * 0.2 * strike
  return q


def _bow(u, d, rng, ctx):
  q = np.zeros((d, NUM_CHANNELS))
  n = 1 if d < 60 or rng.uniform() < 0.6 else 2
  p = (u * n) % 1.0
  p[-1] = 1.0
  bend = rng.uniform(0.5, 1.2) * _plateau(p, 0.4, 0.6)
  q[:, _C['torso_bend']] = bend
  q[:, _C['neck_flex']] = rng.uniform(0.1, 0.4) * bend
  # Arms hang with gravity, i.e. they flex relative to the bent trunk.
  q[:, _C['sh_flex_r']] = q[:, _C['sh_flex_l']] = rng.uniform(0.5, 0.9) * bend
  return q


def _raise_arms(u, d, rng, ctx):
  q = np.zeros((d, NUM_CHANNELS))
  n = 1 if d < 70 or rng.uniform() < 0.6 else 2
  p = (u * n) % 1.0
  p[-1] = 1.0
  # Each raise and lowering takes at least ~0.5 s.
  lo = min(0.45, 15.0 * n / d)
  up = _plateau(
    p, rng.uniform(max(0.3, lo), 0.45), 1 - rng.uniform(max(0.3, lo), 0.45)
  )
  height = rng.uniform(2.4, 3.0)
  sfx_list = ('_r', '_l') if rng.uniform() < 0.8 else ('_r',)
  lateral = rng.uniform() < 0.5  # raise through the sides or the front
  for sfx in sfx_list:
    if lateral:
      q[:, _C['sh_abd' + sfx]] = height * up
    else:
      q[:, _C['sh_flex' + sfx]] = height * up
    q[:, _C['elbow' + sfx]] = rng.uniform(0.0, 0.3) * up
  q[:, _C['torso_bend']] = -0.08 * up
  q[:, _C['neck_flex']] = -0.15 * up
  return q


_MOTIONS = {
  'walk': _walk,
  'wave': _wave,
  'jump': _jump,
  'squat': _squat,
  'kick': _kick,
  'turn': _turn,
  'clap': _clap,
  'punch': _punch,
  'bow': _bow,
  'raise_arms': _raise_arms,
}
# Walks and turns choose their own direction from the subject's position.
_MIRRORABLE = frozenset(CLASS_NAMES) - {'walk', 'turn'}
assert set(_MOTIONS) == set(CLASS_NAMES)


# ---------------------------------------------------------------------------
# Background: idle pose, sway and fidgets.
# ---------------------------------------------------------------------------
def _slow_noise(rng, t, fps, amps, periods=(1.5, 6.0), k=3):
  """Sum of ``k`` random slow sinusoids per channel: (T, len(amps))."""
  amps = np.asarray(amps, np.float64)
  per = rng.uniform(*periods, size=(k, amps.size)) * fps
  phase = rng.uniform(0, 2 * np.pi, size=(k, amps.size))
  w = rng.uniform(0.3, 1.0, size=(k, amps.size))
  w /= w.sum(0, keepdims=True)
  x = np.arange(t)[:, None, None] * (2 * np.pi / per) + phase
  return (np.sin(x) * w).sum(1) * amps


def _idle(rng, t, fps):
  """Neutral stance plus sway, breathing and a slow positional drift."""
  q = np.zeros((t, NUM_CHANNELS))
  # Per-sequence neutral stance.
  for sfx in ('_r', '_l'):
    q[:, _C['hip_abd' + sfx]] = rng.uniform(0.02, 0.08)
    q[:, _C['sh_abd' + sfx]] = rng.uniform(0.05, 0.18)
    q[:, _C['elbow' + sfx]] = rng.uniform(0.05, 0.3)
    q[:, _C['knee' + sfx]] = rng.uniform(0.0, 0.06)
  q[:, _C['neck_flex']] = rng.uniform(-0.05, 0.15)
  names = (
    'torso_bend',
    'torso_side',
    'torso_twist',
    'head_yaw',
    'neck_flex',
    'sh_flex_r',
    'sh_flex_l',
    'hip_abd_r',
    'hip_abd_l',
    'fwd_speed',
    'lat_speed',
  )
  amps = (0.03, 0.03, 0.04, 0.1, 0.05, 0.05, 0.05, 0.02, 0.02, 0.0015, 0.0015)
  idx = [_C[n] for n in names]
  q[:, idx] += _slow_noise(rng, t, fps, amps)
  # Breathing: a ~4 s chest/shoulder oscillation.
  br = np.sin(
    2 * np.pi * np.arange(t) / (rng.uniform(3.0, 5.0) * fps)
    + rng.uniform(0, 2 * np.pi)
  )
  q[:, _C['torso_bend']] -= 0.01 * br
  q[:, _C['sh_abd_r']] += 0.015 * br
  q[:, _C['sh_abd_l']] += 0.015 * br
  return q


def _fidget(rng, d):
  """A small low-amplitude movement used inside background gaps."""
  q = np.zeros((d, NUM_CHANNELS))
  env = _bump(np.linspace(0.0, 1.0, d))
  kind = rng.integers(4)
  sfx = '_r' if rng.uniform() < 0.5 else '_l'
  if kind == 0:  # touch face / adjust clothes
    q[:, _C['sh_flex' + sfx]] = rng.uniform(0.1, 0.4) * env
    q[:, _C['elbow' + sfx]] = rng.uniform(0.3, 0.9) * env
  elif kind == 1:  # look around
    q[:, _C['head_yaw']] = rng.uniform(-0.5, 0.5) * env
    q[:, _C['neck_flex']] = rng.uniform(-0.1, 0.2) * env
  elif kind == 2:  # weight shift
    q[:, _C['torso_side']] = rng.uniform(-0.08, 0.08) * env
    q[:, _C['hip_abd' + sfx]] = rng.uniform(0.02, 0.1) * env
    q[:, _C['knee' + sfx]] = rng.uniform(0.05, 0.2) * env
  else:  # stretch / shrug
    q[:, _C['sh_abd_r']] = q[:, _C['sh_abd_l']] = rng.uniform(0.05, 0.25) * env
    q[:, _C['torso_bend']] = rng.uniform(-0.1, 0.1) * env
  return q


# ---------------------------------------------------------------------------
# Sequence assembly.
# ---------------------------------------------------------------------------
def _layout(rng, t, spec):
  """Alternating (start, length, label) segments covering [0, t)."""
  segments = []
  # The leading gap is shortened when needed so that one action always fits.
  pos = int(rng.integers(spec.min_gap, spec.max_gap + 1))
  pos = min(pos, t - spec.min_segment)
  segments.append((0, pos, BACKGROUND))
  while t - pos >= spec.min_segment:
    d = int(rng.integers(spec.min_segment, spec.max_segment + 1))
    d = min(d, t - pos)
    segments.append((pos, d, int(rng.integers(NUM_CLASSES))))
    pos += d
    if pos >= t:
      break
    g = int(rng.integers(spec.min_gap, spec.max_gap + 1))
    g = min(g, t - pos)
    segments.append((pos, g, BACKGROUND))
    pos += g
  if pos < t:  # tail too short for an action
    start, length, label = segments[-1]
    if label == BACKGROUND:
      segments[-1] = (start, length + t - pos, label)
    else:
      segments.append((pos, t - pos, BACKGROUND))
  return segments


def _time_warp(rng, d):
  """Smooth monotone map of [0, 1] onto itself sampled at ``d`` frames."""
  s = np.linspace(0.0, 1.0, d)
  # The derivative 1 + a1 cos(2 pi s) + a2 cos(4 pi s) stays positive for
  # |a1| + |a2| < 1, and the sines vanish at both ends so 0 -> 0 and 1 -> 1.
  a1, a2 = rng.uniform(-0.25, 0.25, size=2)
  return (
    s
    + a1 * np.sin(2 * np.pi * s) / (2 * np.pi)
    + a2 * np.sin(4 * np.pi * s) / (4 * np.pi)
  )


def _edge_envelope(rng, d, spec):
  """Fade in/out over a few frames; these frames keep the action label."""
  r = int(rng.integers(spec.ramp_frames[0], spec.ramp_frames[1] + 1))
  r = max(1, min(r, d // 4))
  i = np.arange(d, dtype=np.float64)
  up = _smoothstep(np.clip(i / r, 0.0, 1.0))
  down = _smoothstep(np.clip((d - 1 - i) / r, 0.0, 1.0))
  return up * down


def _wrap(a):
  return (a + np.pi) % (2 * np.pi) - np.pi


def _integrate(q, yaw0):
  """Heading and room-floor position from the velocity channels."""
  yaw = yaw0 + np.cumsum(q[:, _C['yaw_rate']])
  fwd, lat = q[:, _C['fwd_speed']], q[:, _C['lat_speed']]
  # Facing is R_y(yaw) (0, 0, -1); the subject's left is R_y(yaw) (-1, 0, 0).
  dx = -np.sin(yaw) * fwd - np.cos(yaw) * lat
  dz = -np.cos(yaw) * fwd + np.sin(yaw) * lat
  return yaw, np.cumsum(dx), np.cumsum(dz)


def generate_sequence(
  rng: np.random.Generator, spec: SequenceSpec
) -> tuple[np.ndarray, np.ndarray]:
  """Generates one untrimmed sequence and its per-frame labels.

  Args:
    rng: Source of randomness; the output is a deterministic function of it.
    spec: Generator settings.

  Returns:
    ``skeleton``: float32 (T, 1, 25, 3) joint positions in metres, Kinect
    camera frame. ``labels``: int32 (T,) in [0, NUM_CLASSES], with
    ``BACKGROUND == NUM_CLASSES`` for frames outside any action.
  """
  t = int(rng.integers(spec.min_frames, spec.max_frames + 1))
  body = _sample_body(rng, spec)
  q = _idle(rng, t, spec.fps)
  labels = np.full((t,), BACKGROUND, np.int32)
  yaw0 = rng.uniform(-np.pi / 3, np.pi / 3)  # roughly facing the camera

  def state_at(start):
    if start == 0:
      return yaw0, 0.0, 0.0
    yaw, x, z = _integrate(q[:start], yaw0)
    return yaw[-1], x[-1], z[-1]

  for start, d, label in _layout(rng, t, spec):
    if label == BACKGROUND:
      if d >= 15 and rng.uniform() < spec.fidget_prob:
        fd = int(rng.integers(15, min(40, d) + 1))
        fs = start + int(rng.integers(0, d - fd + 1))
        q[fs : fs + fd] += _fidget(rng, fd)
      continue
    labels[start : start + d] = label
    name = CLASS_NAMES[label]
    yaw, x, z = state_at(start)

    def walk_plan(n_frames, yaw=yaw, x=x, z=z):
      # Pick a plausible speed and gentle curve that keeps the subject within
      # ~1 m of where they started (i.e. inside the sensor's field of view);
      # if no gentle path fits, sharper and slower ones are tried.
      best, best_r = None, np.inf
      for k in range(16):
        speed = rng.uniform(0.5, 1.3) / (1 + k // 8) / spec.fps  # m / frame
        dyaw = rng.uniform(-0.8, 0.8) * (1 + k // 8)
        dist = speed * n_frames * 0.85  # the edge ramps slow the start/end
        h = yaw + dyaw / 2
        r = np.hypot(x - np.sin(h) * dist, z - np.cos(h) * dist)
        if r < 1.0:
          return dist / 0.85, dyaw
        if r < best_r:
          best, best_r = (dist / 0.85, dyaw), r
      return best

    def turn_angle(yaw=yaw):
      mag = rng.uniform(np.pi / 2, np.pi)
      # Usually turn back towards the camera so the subject stays trackable.
      towards = -np.sign(_wrap(yaw)) or 1.0
      return mag * (towards if rng.uniform() < 0.75 else -towards)

    ctx = {
      'tempo': rng.uniform(*spec.tempo_range),
      'fps': spec.fps,
      'walk_plan': walk_plan,
      'turn_angle': turn_angle,
    }
    u = _time_warp(rng, d)
    motion = _MOTIONS[name](u, d, rng, ctx)
    if name in _MIRRORABLE and rng.uniform() < 0.5:
      motion = _mirror(motion)
    yaw_rate = motion[:, _C['yaw_rate']].copy()
    motion *= _edge_envelope(rng, d, spec)[:, None]
    if name == 'turn':  # the yaw already eases in/out; keep the full angle
      motion[:, _C['yaw_rate']] = yaw_rate
    q[start : start + d] += motion

  yaw, x, z = _integrate(q, yaw0)
  root = np.stack([x, _root_height(q, body), z], axis=-1)
  joints = _forward_kinematics(q, root, yaw, body)

  # Room -> Kinect camera: the camera stands ~1 m high a few metres away and is
  # slightly tilted/rolled; subjects start near the optical axis.
  cam_h = rng.uniform(0.7, 1.2)
  offset = np.array([rng.uniform(-0.5, 0.5), -cam_h, rng.uniform(2.6, 3.6)])
  r_cam = _rot('x', np.asarray(rng.uniform(-0.12, 0.12))) @ _rot(
    'z', np.asarray(rng.uniform(-0.03, 0.03))
  )
  joints = (joints + offset) @ r_cam.T

  noise_scale = np.ones(graph.NUM_JOINTS)
  noise_scale[[7, 11, 21, 22, 23, 24, 15, 19]] = 1.5  # hands and feet jitter
  joints += (
    rng.normal(size=joints.shape) * (spec.noise_std * noise_scale)[:, None]
  )
  return joints[:, None].astype(np.float32), labels
