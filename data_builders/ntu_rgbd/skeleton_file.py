"""Reader for NTU RGB+D ``.skeleton`` text files and sample names.

Grammar (docs/data_and_eval.md §1.2; official ``read_skeleton_file.m``)::

  numFrames                      one integer, counts zero-body frames too
  numFrames times:
    numBodies                    one integer, 0 is legal
    numBodies times:
      body line                  10 tokens: bodyID clipedEdges
                                 handLeftConfidence handLeftState
                                 handRightConfidence handRightState
                                 isResticted leanX leanY trackingState
      numJoints                  always 25
      25 joint lines             12 tokens: x y z depthX depthY colorX colorY
                                 orientationW X Y Z trackingState

Every deviation raises ``RawFormatError(path, line, expectation, found)`` with a
1-based line number. Legal but unusual input is kept: zero-body frames, CRLF
line endings, more than 300 frames, trailing blank lines.

The parse is lossless up to float32: body records are returned flattened in
file order (frame-major, then in-frame position), see ``parse_skeleton_text``.
This module imports only NumPy so worker processes start quickly.
"""

import dataclasses
import os
import re

import numpy as np

from data_builders.common import RawFormatError

NUM_JOINTS = 25
BODY_TOKENS = 10
JOINT_TOKENS = 12
_JOINT_COUNT_TOKENS = [str(NUM_JOINTS)]
# Integer body-line fields 2-7, in file order (stored as ``body_info``).
BODY_INFO_FIELDS = (
  'clipedEdges',
  'handLeftConfidence',
  'handLeftState',
  'handRightConfidence',
  'handRightState',
  'isResticted',
)

NAME_RE = re.compile(r'^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$')
_INT_RE = re.compile(r'^[+-]?\d+$')  # stricter than int(): no '1_0', no ' '
# Decimal or scientific notation, nan and inf (rejected later where it matters).
_FLOAT_RE = re.compile(
  r'^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(nan|inf|infinity)$',
  re.IGNORECASE,
)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

# Inclusive value ranges of the name fields over NTU RGB+D 120 (§1.1).
_NAME_RANGES = {
  'setup': (1, 32),
  'camera': (1, 3),
  'performer': (1, 106),
  'replication': (1, 2),
  'action': (1, 120),
}


@dataclasses.dataclass(frozen=True)
class SampleName:
  """The fields of a sample name ``SsssCcccPpppRrrrAaaa`` (1-based ids)."""

  stem: str
  setup: int
  camera: int
  performer: int
  replication: int
  action: int

  @property
  def label(self) -> int:
    return self.action - 1  # 0-based class index, as in every reference


def parse_name(path) -> SampleName:
  """Parses the sample fields from a ``.skeleton`` path (fixed offsets, §1.1).

  Raises:
    RawFormatError: the stem does not match ``SsssCcccPpppRrrrAaaa`` or a field
      is outside the NTU RGB+D 120 range.
  """
  stem = os.path.basename(os.fspath(path))
  if stem.endswith('.skeleton'):
    stem = stem[: -len('.skeleton')]
  m = NAME_RE.match(stem)
  if m is None:
    raise RawFormatError(
      path,
      None,
      'a file name '
      'SsssCcccPpppRrrrAaaa.skeleton (e.g. '
      'S001C002P003R002A013.skeleton)',
      found=os.path.basename(os.fspath(path)),
    )
  fields = dict(zip(_NAME_RANGES, (int(g) for g in m.groups())))
  for key, (lo, hi) in _NAME_RANGES.items():
    if not lo <= fields[key] <= hi:
      raise RawFormatError(
        path, None, f'{key} id in {lo}..{hi} in the file name', found=stem
      )
  return SampleName(stem=stem, **fields)


def read_sample_list(path) -> frozenset:
  """Stems listed in an official missing-skeleton file (§1.4).

  Keeps only lines that are exactly a sample name, so the official copy (with
  its 2-line header and blank line) and header-less copies parse alike.
  """
  with open(path, encoding='utf-8') as f:
    return frozenset(
      s for s in (line.strip() for line in f) if NAME_RE.match(s)
    )


def _int_token(tok, path, line, what, lo=_INT64_MIN, hi=_INT64_MAX):
  if not _INT_RE.match(tok):
    raise RawFormatError(path, line, what, found=tok)
  value = int(tok)
  if not lo <= value <= hi:
    raise RawFormatError(path, line, f'{what} in [{lo}, {hi}]', found=tok)
  return value


def _count_line(lines, i, path, what):
  """The single non-negative integer on line ``i`` (0-based)."""
  toks = lines[i].split()
  if len(toks) != 1:
    raise RawFormatError(path, i + 1, f'{what} (one integer)', found=lines[i])
  return _int_token(
    toks[0],
    path,
    i + 1,
    f'{what} (a non-negative integer)',
    lo=0,
    hi=_INT32_MAX,
  )


def _body_line_error(toks, path, line):
  """Raises for the first bad token of a 10-token body line."""
  _int_token(toks[0], path, line, 'an integer bodyID')
  for tok, name in zip(toks[1:7], BODY_INFO_FIELDS):
    _int_token(tok, path, line, f'an integer {name}', _INT32_MIN, _INT32_MAX)
  for tok, name in zip(toks[7:9], ('leanX', 'leanY')):
    if not _FLOAT_RE.match(tok):
      raise RawFormatError(path, line, f'a number {name}', found=tok)
  _int_token(
    toks[9], path, line, 'an integer body trackingState', _INT32_MIN, _INT32_MAX
  )
  raise AssertionError('unreachable: the body line was valid')


def _locate_joint_error(lines, starts, path, before=None):
  """Slow path: raises for the first malformed joint line (before ``before``).

  Returns normally when every checked line has 12 numeric tokens.
  """
  for start in starts:
    for j in range(start, start + NUM_JOINTS):
      if before is not None and j >= before or j >= len(lines):
        return
      toks = lines[j].split()
      if len(toks) != JOINT_TOKENS:
        raise RawFormatError(
          path,
          j + 1,
          f'{JOINT_TOKENS} tokens on a joint line (x y z depthX '
          'depthY colorX colorY orientationW/X/Y/Z trackingState), got '
          f'{len(toks)}',
          found=lines[j],
        )
      for tok in toks:
        if not _FLOAT_RE.match(tok):
          raise RawFormatError(
            path, j + 1, 'a number on a joint line', found=tok
          )


@dataclasses.dataclass
class _Records:
  """Body-line fields collected by ``_walk``, one entry per body record."""

  frames: list = dataclasses.field(default_factory=list)
  slots: list = dataclasses.field(default_factory=list)
  ids: list = dataclasses.field(default_factory=list)
  info: list = dataclasses.field(default_factory=list)
  lean: list = dataclasses.field(default_factory=list)
  tracking: list = dataclasses.field(default_factory=list)
  starts: list = dataclasses.field(default_factory=list)  # first joint line


def _count(lines, i, path, describe):
  """The non-negative integer alone on line ``i`` (0-based).

  ``describe()`` names the field; it is only called on error, so the hot path
  builds no strings.
  """
  toks = lines[i].split()
  if len(toks) == 1 and toks[0].isdigit() and len(toks[0]) < 10:
    return int(toks[0])
  return _count_line(lines, i, path, describe())


def _walk(lines, end, path, rec):
  """Checks the line structure and parses body lines; returns numFrames.

  Joint lines are only located (``rec.starts``); they are parsed in bulk later.
  """

  def eof(i, what):
    raise RawFormatError(path, i + 1, what, found='end of file')

  num_frames = _count(lines, 0, path, lambda: 'the frame count')
  i = 1
  for t in range(num_frames):
    if i >= end:
      eof(i, f'the body count of frame {t + 1}/{num_frames}')
    num_bodies = _count(
      lines, i, path, lambda: f'the body count of frame {t + 1}/{num_frames}'
    )
    i += 1
    for s in range(num_bodies):
      if i + 1 + NUM_JOINTS >= end:  # any of this body's lines missing
        where = f'body {s + 1}/{num_bodies} of frame {t + 1}'
        if i >= end:
          eof(i, f'the body line of {where}')
        if i + 1 >= end:
          eof(i + 1, f'the joint count of {where}')
      toks = lines[i].split()
      if len(toks) != BODY_TOKENS:
        raise RawFormatError(
          path,
          i + 1,
          f'{BODY_TOKENS} tokens on the body line of body '
          f'{s + 1}/{num_bodies} of frame {t + 1} (bodyID clipedEdges '
          'handLeftConfidence handLeftState handRightConfidence '
          'handRightState isResticted leanX leanY trackingState), got '
          f'{len(toks)}',
          found=lines[i],
        )
      int_toks = toks[:7] + toks[9:]
      if all(map(_INT_RE.match, int_toks)):
        ints = list(map(int, int_toks))
        lean = (
          [float(toks[7]), float(toks[8])]
          if all(map(_FLOAT_RE.match, toks[7:9]))
          else None
        )
      else:
        ints = lean = None
      if (
        ints is None
        or lean is None
        or not _INT64_MIN <= ints[0] <= _INT64_MAX
        or not _INT32_MIN <= min(ints[1:]) <= max(ints[1:]) <= _INT32_MAX
      ):
        _body_line_error(toks, path, i + 1)
      rec.ids.append(ints[0])
      rec.info.append(ints[1:7])
      rec.lean.append(lean)
      rec.tracking.append(ints[7])
      rec.frames.append(t)
      rec.slots.append(s)
      i += 1
      if lines[i].split() != _JOINT_COUNT_TOKENS:
        raise RawFormatError(
          path,
          i + 1,
          f'the joint count {NUM_JOINTS} of '
          f'body {s + 1}/{num_bodies} of frame {t + 1}',
          found=lines[i],
        )
      i += 1
      if i + NUM_JOINTS > end:
        raise RawFormatError(
          path,
          end + 1,
          f'joint line {end - i + 1}/{NUM_JOINTS} of body '
          f'{s + 1}/{num_bodies} of frame {t + 1}',
          found='end of file',
        )
      rec.starts.append(i)
      i += NUM_JOINTS
  if i < end:
    raise RawFormatError(
      path, i + 1, f'end of file after {num_frames} frame(s)', found=lines[i]
    )
  return num_frames


def parse_skeleton_text(text: str, path='<string>') -> dict:
  """Parses the contents of one ``.skeleton`` file.

  Args:
    text: The decoded file contents (LF or CRLF line endings).
    path: Used in error messages only.

  Returns:
    A dict of NumPy arrays; R is the number of body records (sum of the body
    counts of all frames), in file order:
      num_frames: int, the header frame count (zero-body frames included).
      body_frame: int32 (R,), frame index of each record.
      body_slot: int32 (R,), position of the record within its frame.
      body_id: int64 (R,), Kinect tracking id (parsed as an integer, exact).
      body_info: int32 (R, 6), the integer fields ``BODY_INFO_FIELDS``.
      body_lean: float32 (R, 2), leanX, leanY.
      body_tracking_state: int32 (R,).
      bodies_xyz: float32 (R, 25, 3), camera-space metres.
      bodies_depth_xy: float32 (R, 25, 2), depth-image pixels.
      bodies_color_xy: float32 (R, 25, 2), colour-image pixels.
      bodies_orientation: float32 (R, 25, 4), quaternion W, X, Y, Z.
      bodies_joint_tracking: int32 (R, 25), per-joint trackingState.

  Raises:
    RawFormatError: naming the 1-based line and what was expected there.
  """
  # CRLF is legal (CTR-GCN strips it); after this every line ends in '\n'.
  if '\r' in text:
    text = text.replace('\r\n', '\n')
  lines = text.split('\n')
  # Trailing blank lines are tolerated; anything else after the last frame is
  # garbage. ``end`` is the number of lines up to the last non-blank one.
  end = len(lines)
  while end > 0 and not lines[end - 1].strip():
    end -= 1
  if end == 0:
    raise RawFormatError(
      path, 1, 'the frame count (one integer)', found='an empty file'
    )

  records = _Records()
  try:
    num_frames = _walk(lines, end, path, records)
  except RawFormatError as e:
    # A split or merged joint line shifts everything after it, so the walk
    # may trip over a later line: report the earliest bad joint line instead.
    _locate_joint_error(lines, records.starts, path, before=(e.line or 1) - 1)
    raise
  starts = records.starts

  num_records = len(starts)
  if num_records:
    joint_lines = [line for s in starts for line in lines[s : s + NUM_JOINTS]]
    try:
      # NumPy's C text parser; ~2x faster than split() + float() in Python.
      joints = np.loadtxt(joint_lines, dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
      joints = None
    if joints is None or joints.shape != (
      num_records * NUM_JOINTS,
      JOINT_TOKENS,
    ):
      # loadtxt also skips blank lines, hence the row-count check.
      _locate_joint_error(lines, starts, path)
      raise RawFormatError(path, starts[0] + 1, 'joint lines of 12 numbers')
  else:
    joints = np.zeros((0, JOINT_TOKENS), np.float64)
  joints = joints.reshape(num_records, NUM_JOINTS, JOINT_TOKENS)

  def joint_line(flat_index):
    r, j = divmod(int(flat_index), NUM_JOINTS)
    return starts[r] + j + 1

  xyz = joints[..., 0:3].astype(np.float32)
  bad = ~np.isfinite(xyz).all(axis=-1).reshape(-1)
  if bad.any():
    k = int(np.argmax(bad))
    raise RawFormatError(
      path,
      joint_line(k),
      'finite x y z coordinates',
      found=lines[joint_line(k) - 1],
    )
  state = joints[..., 11]
  with np.errstate(invalid='ignore'):
    bad = ~((state == np.round(state)) & (np.abs(state) <= _INT32_MAX))
  bad = bad.reshape(-1)
  if bad.any():
    k = int(np.argmax(bad))
    raise RawFormatError(
      path,
      joint_line(k),
      'an integer joint trackingState (12th token)',
      found=lines[joint_line(k) - 1],
    )

  return {
    'num_frames': num_frames,
    'body_frame': np.asarray(records.frames, np.int32),
    'body_slot': np.asarray(records.slots, np.int32),
    'body_id': np.asarray(records.ids, np.int64),
    'body_info': np.asarray(records.info, np.int32).reshape(num_records, 6),
    'body_lean': np.asarray(records.lean, np.float64)
    .astype(np.float32)
    .reshape(num_records, 2),
    'body_tracking_state': np.asarray(records.tracking, np.int32),
    'bodies_xyz': xyz,
    'bodies_depth_xy': joints[..., 3:5].astype(np.float32),
    'bodies_color_xy': joints[..., 5:7].astype(np.float32),
    'bodies_orientation': joints[..., 7:11].astype(np.float32),
    'bodies_joint_tracking': state.astype(np.int32),
  }


def read_skeleton_file(path) -> dict:
  """Reads and parses one ``.skeleton`` file (see ``parse_skeleton_text``)."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode('ascii')
  except UnicodeDecodeError as e:
    raise RawFormatError(
      path,
      data[: e.start].count(b'\n') + 1,
      'ASCII text',
      found=data[e.start : e.start + 8],
    ) from None
  return parse_skeleton_text(text, path)


def convert(path) -> dict:
  """One TFDS example (the builder's features) from one ``.skeleton`` file.

  Top-level and NumPy-only so ``convert_parallel`` can run it in spawned
  worker processes.
  """
  name = parse_name(path)
  example = read_skeleton_file(path)
  example.update(
    num_frames=np.int32(example['num_frames']),
    sample_name=name.stem,
    setup=np.int32(name.setup),
    camera=np.int32(name.camera),
    performer=np.int32(name.performer),
    replication=np.int32(name.replication),
    label=np.int64(name.label),
  )
  return example
