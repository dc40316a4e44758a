"""Writes small trees of NTU RGB+D ``.skeleton`` files in the exact raw format.

Used by tests/test_ntu_builder.py and scripts/bench_ntu_build.py. Everything is
synthetic (docs/data_and_eval.md §1.7): a plausible standing pose with
per-frame
motion and noise, Kinect-like body ids (~7.2e16, consecutive ids differ by 1 so
float64 could not tell them apart), pixel positions from a pinhole projection,
and numbers printed with 7 significant digits like the real files.

``render_sample`` returns the file text together with the values a lossless
parser must return, computed from the printed tokens with Python's ``float``
(independent of the parser under test).
"""

import dataclasses
import os

import numpy as np

NUM_JOINTS = 25
BASE_BODY_ID = 72057594037927936  # 2**56: real ids are 7205759403793xxxx

# A standing pose in the NTU joint order (metres, y up, facing the camera;
# the subject's right side at larger x). Only needs to look plausible.
BASE_POSE = np.array(
  [
    [0.00, 0.00, 0.00],
    [0.00, 0.30, -0.02],
    [0.00, 0.58, -0.04],
    [0.00, 0.70, -0.04],
    [-0.17, 0.48, -0.04],
    [-0.22, 0.22, -0.03],
    [-0.24, -0.02, -0.02],
    [-0.25, -0.10, -0.02],
    [0.17, 0.48, -0.04],
    [0.22, 0.22, -0.03],
    [0.24, -0.02, -0.02],
    [0.25, -0.10, -0.02],
    [-0.09, -0.02, 0.00],
    [-0.10, -0.42, 0.02],
    [-0.10, -0.80, 0.04],
    [-0.10, -0.86, -0.04],
    [0.09, -0.02, 0.00],
    [0.10, -0.42, 0.02],
    [0.10, -0.80, 0.04],
    [0.10, -0.86, -0.04],
    [0.00, 0.50, -0.04],
    [-0.26, -0.16, -0.02],
    [-0.22, -0.09, -0.04],
    [0.26, -0.16, -0.02],
    [0.22, -0.09, -0.04],
  ]
)


@dataclasses.dataclass
class Body:
  """One body record: the 10 body-line fields and 25 joint rows.

  ``joints`` columns: x y z depthX depthY colorX colorY orientationW X Y Z
  trackingState (the last one an integer).
  """

  body_id: int
  info: tuple  # clipedEdges, handLeftConfidence, handLeftState,
  #              handRightConfidence, handRightState, isResticted
  lean: tuple  # leanX, leanY
  tracking_state: int
  joints: np.ndarray  # (25, 12)


def make_body(rng, body_id, t, offset=(0.0, 0.1, 3.0), amplitude=0.05):
  """A plausible body at frame ``t``: base pose, arm swing, drift, noise."""
  pose = BASE_POSE.copy()
  swing = amplitude * np.sin(0.2 * t)
  pose[5:8, 1] += swing
  pose[9:12, 1] -= swing
  xyz = pose + np.asarray(offset) + np.array([0.002 * t, 0.0, 0.0])
  xyz = xyz + rng.normal(scale=0.005, size=xyz.shape)
  z = xyz[:, 2]
  depth = np.stack([256 + 365 * xyz[:, 0] / z, 212 - 365 * xyz[:, 1] / z], 1)
  color = np.stack([960 + 1060 * xyz[:, 0] / z, 540 - 1060 * xyz[:, 1] / z], 1)
  quat = rng.normal(size=(NUM_JOINTS, 4))
  quat /= np.linalg.norm(quat, axis=1, keepdims=True)
  quat[[15, 19, 21, 22, 23, 24]] = 0  # leaf joints carry no orientation
  state = rng.choice([2, 2, 2, 2, 1, 0], size=(NUM_JOINTS, 1))
  joints = np.concatenate([xyz, depth, color, quat, state], axis=1)
  info = (
    int(rng.integers(0, 2)),
    int(rng.integers(0, 2)),
    int(rng.integers(0, 4)),
    int(rng.integers(0, 2)),
    int(rng.integers(0, 4)),
    0,
  )
  lean = tuple(rng.normal(scale=0.1, size=2))
  return Body(int(body_id), info, lean, 2, joints)


def random_frames(
  rng,
  num_frames,
  num_bodies=1,
  *,
  zero_body_frames=(),
  extra_body_frames=(),
  swapped_frames=(),
  first_id=None,
):
  """Frames (lists of ``Body``) of a sample with persistent body ids.

  Args:
    rng: ``np.random.Generator``.
    num_frames: Frame count.
    num_bodies: Persons present in every frame (except ``zero_body_frames``).
    zero_body_frames: Frames with no body at all.
    extra_body_frames: Frames with an additional noise body (e.g. furniture)
      listed last.
    swapped_frames: Frames whose persons are listed in reverse order.
    first_id: Body id of person 0 (others are +1, +2, ...).
  """
  first_id = (
    BASE_BODY_ID + 3165 + int(rng.integers(0, 1000))
    if first_id is None
    else first_id
  )
  frames = []
  for t in range(num_frames):
    if t in zero_body_frames:
      frames.append([])
      continue
    bodies = [
      make_body(
        rng,
        first_id + m,
        t,
        offset=(0.8 * m - 0.4 * (num_bodies - 1), 0.1, 3.0 + 0.3 * m),
      )
      for m in range(num_bodies)
    ]
    if t in swapped_frames:
      bodies = bodies[::-1]
    if t in extra_body_frames:
      noise = make_body(
        rng, first_id + 7, t, offset=(1.5, -0.3, 4.2), amplitude=0.0
      )
      bodies.append(noise)
    frames.append(bodies)
  return frames


def _fmt(value):
  return '%.7g' % value  # 7 significant digits, like the real files


def body_lines(body):
  """The 27 lines (body line, joint count, 25 joint lines) of one body."""
  head = ' '.join(
    [str(body.body_id)]
    + [str(v) for v in body.info]
    + [_fmt(v) for v in body.lean]
    + [str(body.tracking_state)]
  )
  rows = [
    ' '.join([_fmt(v) for v in row[:11]] + [str(int(row[11]))])
    for row in body.joints
  ]
  return [head, str(NUM_JOINTS)] + rows


def render_sample(frames, newline='\n'):
  """Returns ``(text, expected)`` for a list of frames of bodies.

  ``expected`` has the keys and dtypes of ``skeleton_file.parse_skeleton_text``
  and holds the printed values (parsed back with ``float``/``int``).
  """
  lines = [str(len(frames))]
  records = []
  for t, bodies in enumerate(frames):
    lines.append(str(len(bodies)))
    for s, body in enumerate(bodies):
      chunk = body_lines(body)
      lines.extend(chunk)
      records.append((t, s, chunk))
  text = newline.join(lines) + newline
  num_records = len(records)

  def table(rows, cols, dtype):
    return np.array(
      [[float(tok) for tok in row.split()[cols]] for row in rows], np.float64
    ).astype(dtype)

  joint_rows = [row for _, _, chunk in records for row in chunk[2:]]
  joints = (
    table(joint_rows, slice(0, 12), np.float64)
    if joint_rows
    else np.zeros((0, 12))
  )
  joints = joints.reshape(num_records, NUM_JOINTS, 12)
  heads = [chunk[0].split() for _, _, chunk in records]
  expected = {
    'num_frames': len(frames),
    'body_frame': np.array([t for t, _, _ in records], np.int32),
    'body_slot': np.array([s for _, s, _ in records], np.int32),
    'body_id': np.array([int(h[0]) for h in heads], np.int64),
    'body_info': np.array(
      [[int(v) for v in h[1:7]] for h in heads], np.int32
    ).reshape(num_records, 6),
    'body_lean': np.array(
      [[float(v) for v in h[7:9]] for h in heads], np.float64
    )
    .astype(np.float32)
    .reshape(num_records, 2),
    'body_tracking_state': np.array([int(h[9]) for h in heads], np.int32),
    'bodies_xyz': joints[..., 0:3].astype(np.float32),
    'bodies_depth_xy': joints[..., 3:5].astype(np.float32),
    'bodies_color_xy': joints[..., 5:7].astype(np.float32),
    'bodies_orientation': joints[..., 7:11].astype(np.float32),
    'bodies_joint_tracking': joints[..., 11].astype(np.int32),
  }
  return text, expected


def write_text(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='') as f:  # keep '\r\n' as written
    f.write(text)
  return path


# ---------------------------------------------------------------------------
# The edge-case tree (all valid files).
# ---------------------------------------------------------------------------
MAIN = 'nturgb+d_skeletons'
EXTRA = os.path.join('more', 'nturgbd_skeletons_s018_to_s032')

# stem -> expected split per config; None = not in that dataset,
# 'dropped' = in the config's missing-skeleton list.
GOOD_SPLITS = {
  # 1 body, frame 2 has no body.
  'S001C001P001R001A001': dict(
    ntu60_xsub='train',
    ntu60_xview='test',
    ntu120_xsub='train',
    ntu120_xset='test',
  ),
  # 2 persons, a third (noise) body in frames 1-2, order swapped in 3-4.
  'S002C002P003R002A013': dict(
    ntu60_xsub='test',
    ntu60_xview='train',
    ntu120_xsub='test',
    ntu120_xset='train',
  ),
  # In both official missing-skeleton lists.
  'S001C002P005R002A008': dict(
    ntu60_xsub='dropped',
    ntu60_xview='dropped',
    ntu120_xsub='dropped',
    ntu120_xset='dropped',
  ),
  # 305 frames (> 300).
  'S005C003P008R001A030': dict(
    ntu60_xsub='train',
    ntu60_xview='train',
    ntu120_xsub='train',
    ntu120_xset='test',
  ),
  # CRLF line endings, 2 persons.
  'S010C001P010R001A055': dict(
    ntu60_xsub='test',
    ntu60_xview='test',
    ntu120_xsub='test',
    ntu120_xset='train',
  ),
  # Every frame has zero bodies.
  'S003C001P002R001A002': dict(
    ntu60_xsub='train',
    ntu60_xview='test',
    ntu120_xsub='train',
    ntu120_xset='test',
  ),
  # NTU-120 only (setup 18), second folder.
  'S018C002P045R001A061': dict(
    ntu60_xsub=None, ntu60_xview=None, ntu120_xsub='train', ntu120_xset='train'
  ),
  # NTU-120 only and in the NTU-120 missing list.
  'S019C001P046R001A075': dict(
    ntu60_xsub=None,
    ntu60_xview=None,
    ntu120_xsub='dropped',
    ntu120_xset='dropped',
  ),
  # Setup 17 but action 120: NTU-120 only.
  'S017C003P040R002A120': dict(
    ntu60_xsub=None, ntu60_xview=None, ntu120_xsub='test', ntu120_xset='test'
  ),
}


def write_good_tree(root, seed=0):
  """Writes the edge-case tree; returns ``{stem: (path, expected)}``."""
  rng = np.random.default_rng(seed)
  specs = {
    'S001C001P001R001A001': (
      MAIN,
      dict(num_frames=6, zero_body_frames={2}, first_id=BASE_BODY_ID + 3165),
      '\n',
    ),
    'S002C002P003R002A013': (
      MAIN,
      dict(
        num_frames=5,
        num_bodies=2,
        extra_body_frames={1, 2},
        swapped_frames={3, 4},
        first_id=BASE_BODY_ID + 3200,
      ),
      '\n',
    ),
    'S001C002P005R002A008': (MAIN, dict(num_frames=3), '\n'),
    'S005C003P008R001A030': (MAIN, dict(num_frames=305), '\n'),
    'S010C001P010R001A055': (MAIN, dict(num_frames=4, num_bodies=2), '\r\n'),
    'S003C001P002R001A002': (
      MAIN,
      dict(num_frames=3, zero_body_frames={0, 1, 2}),
      '\n',
    ),
    'S018C002P045R001A061': (EXTRA, dict(num_frames=3), '\n'),
    'S019C001P046R001A075': (EXTRA, dict(num_frames=2), '\n'),
    'S017C003P040R002A120': (MAIN, dict(num_frames=2, num_bodies=2), '\n'),
  }
  out = {}
  for stem, (folder, kwargs, newline) in specs.items():
    text, expected = render_sample(random_frames(rng, **kwargs), newline)
    path = write_text(os.path.join(root, folder, f'{stem}.skeleton'), text)
    out[stem] = (path, expected)
  return out


# ---------------------------------------------------------------------------
# The bad-input tree.
# ---------------------------------------------------------------------------
def _lines(rng, num_frames=3, num_bodies=1):
  text, _ = render_sample(random_frames(rng, num_frames, num_bodies))
  return text.split('\n')[:-1]  # drop the '' after the final newline


def write_bad_tree(root, seed=1):
  """Writes two valid samples (one per ntu60_xsub split) and one file per kind
  of malformation.

  Returns:
    ``(good, bad)``: ``good`` maps stem -> path; ``bad`` maps file name ->
    ``(path, line, fragment)``, the line number the error must name (None for
    file-name errors) and a fragment of the expectation in the message.
  """
  rng = np.random.default_rng(seed)
  folder = os.path.join(root, MAIN)
  good = {}
  for stem in ('S001C001P001R001A001', 'S001C001P003R001A001'):
    text, _ = render_sample(random_frames(rng, 3))
    good[stem] = write_text(os.path.join(folder, f'{stem}.skeleton'), text)

  # Line numbers (1-based) of a 3-frame, 1-body sample: 1 = frame count,
  # 2 = body count, 3 = body line, 4 = joint count, 5..29 = joints of frame 1,
  # 30 = body count of frame 2, 31 = its body line, ...
  cases = {}

  lines = _lines(rng)
  cases['S001C001P001R001A002'] = (
    '\n'.join(lines[:40]) + '\n',
    41,
    'joint line',
  )  # truncated in frame 2

  lines = _lines(rng)
  toks = lines[9].split()
  toks[4] = 'abc'
  lines[9] = ' '.join(toks)
  cases['S001C001P001R001A003'] = ('\n'.join(lines) + '\n', 10, 'a number')

  lines = _lines(rng)
  del lines[32]  # one joint line of frame 2 fewer ...
  lines[31] = '24'  # ... and the count says so
  cases['S001C001P001R001A004'] = (
    '\n'.join(lines) + '\n',
    32,
    'joint count 25',
  )

  lines = _lines(rng)
  lines[2] = ' '.join(lines[2].split()[:9])
  cases['S001C001P001R001A005'] = ('\n'.join(lines) + '\n', 3, '10 tokens')

  lines = _lines(rng)
  lines[20] = ' '.join(lines[20].split()[:11])
  cases['S001C001P001R001A006'] = ('\n'.join(lines) + '\n', 21, '12 tokens')

  lines = _lines(rng)
  toks = lines[6].split()
  toks[1] = 'nan'
  lines[6] = ' '.join(toks)
  cases['S001C001P001R001A007'] = ('\n'.join(lines) + '\n', 7, 'finite')

  lines = _lines(rng)
  toks = lines[35].split()
  toks[2] = '-inf'
  lines[35] = ' '.join(toks)
  cases['S001C001P001R001A009'] = ('\n'.join(lines) + '\n', 36, 'finite')

  cases['S001C001P001R001A010'] = ('', 1, 'frame count')  # empty file

  lines = _lines(rng)
  cases['S001C001P001R001A011'] = (
    '\n'.join(lines + ['0', 'garbage']) + '\n',
    len(lines) + 1,
    'end of file',
  )

  lines = _lines(rng)
  toks = lines[2].split()
  toks[0] = '7.205759e16'  # a float-printed body id would lose precision
  lines[2] = ' '.join(toks)
  cases['S001C001P001R001A012'] = ('\n'.join(lines) + '\n', 3, 'bodyID')

  lines = _lines(rng)
  lines[21:22] = [
    ' '.join(lines[21].split()[:6]),
    ' '.join(lines[21].split()[6:]),
  ]  # a joint line split in two
  cases['S001C001P001R001A013'] = ('\n'.join(lines) + '\n', 22, '12 tokens')

  bad = {}
  for stem, (text, line, fragment) in cases.items():
    path = write_text(os.path.join(folder, f'{stem}.skeleton'), text)
    bad[os.path.basename(path)] = (path, line, fragment)
  text, _ = render_sample(random_frames(rng, 2))
  name = 'S01C001P001R001A001.skeleton'  # two-digit setup
  bad[name] = (
    write_text(os.path.join(folder, name), text),
    None,
    'SsssCcccPpppRrrrAaaa',
  )
  return good, bad


# ---------------------------------------------------------------------------
# A realistic tree for throughput measurements.
# ---------------------------------------------------------------------------
def write_realistic_tree(root, num_files, seed=0, mean_frames=100):
  """``num_files`` valid NTU-60 samples of ~``mean_frames`` frames with 1 or
  2 bodies (2 for the mutual actions A050-A060), not in the missing lists.

  Returns the list of paths.
  """
  rng = np.random.default_rng(seed)
  missing_file = os.path.join(
    os.path.dirname(__file__),
    '..',
    'data_builders',
    'ntu_rgbd',
    'NTU_RGBD_samples_with_missing_skeletons.txt',
  )
  with open(missing_file) as f:
    missing = {line.strip() for line in f}
  paths = []
  i = 0
  while len(paths) < num_files:
    setup = 1 + i % 17
    camera = 1 + (i // 17) % 3
    performer = 1 + (i // 51) % 40
    replication = 1 + (i // 2040) % 2
    action = 1 + (i * 7) % 60
    i += 1
    stem = (
      f'S{setup:03d}C{camera:03d}P{performer:03d}R{replication:03d}'
      f'A{action:03d}'
    )
    if stem in missing:
      continue
    num_frames = int(np.clip(rng.normal(mean_frames, 20), 30, 300))
    num_bodies = 2 if action >= 50 else 1
    text, _ = render_sample_fast(random_frames(rng, num_frames, num_bodies))
    paths.append(write_text(os.path.join(root, MAIN, f'{stem}.skeleton'), text))
  return paths


def render_sample_fast(frames, newline='\n'):
  """Like ``render_sample`` but without the expected values (for big trees)."""
  lines = [str(len(frames))]
  for bodies in frames:
    lines.append(str(len(bodies)))
    for body in bodies:
      lines.extend(body_lines(body))
  return newline.join(lines) + newline, None
