"""Parsers for the raw PKU-MMD phase-1 files (docs: docs/data_and_eval.md §2).

Kept free of TFDS imports on purpose: ``convert_video`` runs in spawned
worker processes, which import this module and nothing heavier.

Conventions fixed here (see README.md):

* Skeleton file: one line per frame, >= 150 numbers, the first 150 are
  (person 1, joints 1..25, xyz) then (person 2, joints 1..25, xyz).
* Label file: lines ``label,start,end,confidence`` (commas or whitespace),
  label 1..51. Segments are stored exactly as written.
* Per-frame labels: ``FRAME_CONVENTION`` (0-based rows, half-open [start, end)),
  class = file label - 1, background = ``BACKGROUND`` (51, the last index).
  Overlaps: the segment that starts later wins; equal starts: the later line.
"""

import dataclasses
import os
import re

import numpy as np

from data_builders.common import RawFormatError

NUM_CLASSES = 51
BACKGROUND = NUM_CLASSES  # the last index of class_names()
NUM_PERSONS = 2
NUM_JOINTS = 25
NUM_VALUES = NUM_PERSONS * NUM_JOINTS * 3  # 150 floats per frame line

# File (start, end) -> rows start .. end-1. Chosen because the detection
# reference (JHang-det, used by HiCLR/PCM3) and CMD slice rows [start, end),
# and it is this library's own segment convention (skel_jax.postprocess), so
# run-length decoding the per-frame labels gives back the file's numbers.
FRAME_CONVENTION = 'zero_based_half_open'

SPLIT_FILE_NAMES = {
  'cross_subject': ('cross-subject.txt', 'cross_subject.txt'),
  'cross_view': ('cross-view.txt', 'cross_view.txt'),
}
SKELETON_EXTS = ('.txt', '.skeleton')
LABEL_EXTS = ('.txt', '.label')
VIEWS = ('L', 'M', 'R')

# Ids are 'XXXX-V' in phase 1; the prefix is kept loose so that renamed
# copies still parse, the view suffix is what the builder relies on.
_VIDEO_ID = re.compile(r'^[A-Za-z0-9_]+-[LMR]$')
_TRAIN_HEADER = re.compile(r'^\s*training\s+videos\s*:\s*$', re.I)
# 'Validataion' (sic) is what the released files say.
_TEST_HEADER = re.compile(
  r'^\s*(validataion|validation|test|testing)\s+videos\s*:\s*$', re.I
)


class PkuFormatError(RawFormatError):
  """``RawFormatError`` that survives pickling (worker -> parent process).

  The base class's ``args`` hold only the message, so the default pickle
  protocol cannot rebuild it; this rebuilds from the four fields.
  """

  def __reduce__(self):
    return (type(self), (self.path, self.line, self.expected, self.found))


def class_names():
  """The 51 action names in label-id order (docs/data_and_eval.md §2.5)."""
  path = os.path.join(os.path.dirname(__file__), 'class_names.txt')
  with open(path, encoding='utf-8') as f:
    names = [line.strip() for line in f if line.strip()]
  assert len(names) == NUM_CLASSES, path
  return names


# ---------------------------------------------------------------------------
# Split files.
# ---------------------------------------------------------------------------
def find_split_file(manual_dir, protocol):
  """Path of the split file of ``protocol`` found anywhere under manual_dir.

  Several matches: the shallowest wins, then the name order of
  ``SPLIT_FILE_NAMES``, then the path, so the choice is deterministic.
  """
  names = SPLIT_FILE_NAMES[protocol]
  found = []
  for root, _, files in os.walk(manual_dir, followlinks=True):
    for name in files:
      if name in names:
        path = os.path.join(root, name)
        rel = os.path.relpath(path, manual_dir)
        found.append((rel.count(os.sep), names.index(name), path))
  if not found:
    raise FileNotFoundError(
      f'PKU-MMD {protocol} split file not found: searched for '
      f'{" or ".join(names)} anywhere under {manual_dir} (e.g. '
      f'{os.path.join(manual_dir, "Split", names[0])})'
    )
  return min(found)[2]


def parse_split_file(path):
  """Reads the 4-line split format of docs/data_and_eval.md §2.4.

  Returns:
    ``{'train': [(video_id, line)], 'test': [(video_id, line)]}`` in file
    order, ``line`` being the 1-based line that lists the id.

  Raises:
    PkuFormatError: on any deviation (always, in strict and lenient builds:
      the split file defines the dataset, there is nothing to skip).
  """
  with open(path, encoding='utf-8-sig', errors='replace') as f:
    lines = f.read().splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  if len(lines) != 4:
    raise PkuFormatError(
      path,
      None,
      "4 lines ('Training videos:', ids, 'Validataion videos:', ids)",
      f'{len(lines)} lines',
    )
  headers = (
    (1, _TRAIN_HEADER, "'Training videos:'"),
    (3, _TEST_HEADER, "'Validataion videos:' (or Validation/Test)"),
  )
  for lineno, pattern, what in headers:
    if not pattern.match(lines[lineno - 1]):
      raise PkuFormatError(path, lineno, what, lines[lineno - 1][:60])
  out = {}
  for split, lineno in (('train', 2), ('test', 4)):
    ids = [t.strip() for t in lines[lineno - 1].split(',')]
    ids = [t for t in ids if t]  # the trailing ', ' leaves an empty token
    seen = set()
    for vid in ids:
      if not _VIDEO_ID.match(vid):
        raise PkuFormatError(
          path, lineno, "video ids like '0002-L' separated by commas", vid
        )
      if vid in seen:
        raise PkuFormatError(
          path, lineno, 'each video id once per list', f'{vid} twice'
        )
      seen.add(vid)
    out[split] = [(vid, lineno) for vid in ids]
  return out


# ---------------------------------------------------------------------------
# Locating skeleton and label files.
# ---------------------------------------------------------------------------
def _kind_from_dirs(rel_dir):
  """'skeleton' / 'label' from the deepest folder name that says which."""
  for part in reversed(rel_dir.split(os.sep)):
    low = part.lower()
    if 'skel' in low:
      return 'skeleton'
    if 'label' in low:
      return 'label'
  return None


def index_raw_files(manual_dir, skeleton_dir=None, label_dir=None):
  """Maps video ids to their skeleton and label files under manual_dir.

  A ``.skeleton`` file is a skeleton and a ``.label`` file a label file
  wherever they are; a ``.txt`` file is classified by the deepest enclosing
  folder whose name contains 'skel' (``PKU_Skeleton_Renew``,
  ``Data/SKELETON_VIDEO``) or 'label' (``Train_Label_PKU_final``, ``Label``).
  ``skeleton_dir`` / ``label_dir`` (absolute or relative to manual_dir)
  override the search for their kind. Only names ``<video id><ext>`` count.

  Returns:
    ``(skeletons, labels, duplicates)``: ``{video_id: path}`` twice, and
    ``{(kind, video_id): [paths]}`` where several files matched (the first
    path, the shallowest then alphabetical one, is used).
  """

  def walk(top):
    for root, _, files in os.walk(top, followlinks=True):
      for name in files:
        stem, ext = os.path.splitext(name)
        if _VIDEO_ID.match(stem):
          yield root, stem, ext.lower(), os.path.join(root, name)

  candidates = {'skeleton': {}, 'label': {}}

  def add(kind, vid, path):
    rel = os.path.relpath(path, manual_dir)
    candidates[kind].setdefault(vid, []).append((rel.count(os.sep), path))

  fixed = {'skeleton': skeleton_dir, 'label': label_dir}
  exts = {'skeleton': SKELETON_EXTS, 'label': LABEL_EXTS}
  for kind, folder in fixed.items():
    if folder is None:
      continue
    folder = os.path.join(manual_dir, folder)  # no-op when absolute
    if not os.path.isdir(folder):
      raise FileNotFoundError(f'PKU-MMD {kind}_dir {folder} is not a folder')
    for _, stem, ext, path in walk(folder):
      if ext in exts[kind]:
        add(kind, stem, path)
  for root, stem, ext, path in walk(manual_dir):
    if ext == '.skeleton':
      kind = 'skeleton'
    elif ext == '.label':
      kind = 'label'
    elif ext == '.txt':
      kind = _kind_from_dirs(os.path.relpath(root, manual_dir))
    else:
      continue
    if kind is not None and fixed[kind] is None:
      add(kind, stem, path)

  chosen, duplicates = {}, {}
  for kind, by_id in candidates.items():
    chosen[kind] = {}
    for vid, paths in by_id.items():
      paths = [p for _, p in sorted(set(paths))]
      chosen[kind][vid] = paths[0]
      if len(paths) > 1:
        duplicates[(kind, vid)] = paths
  return chosen['skeleton'], chosen['label'], duplicates


# ---------------------------------------------------------------------------
# Skeleton and label files.
# ---------------------------------------------------------------------------
def _read_lines(path):
  """Lines without trailing blank ones (a final newline is not a frame)."""
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.read().splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  return lines


def parse_skeleton(path):
  """Reads a skeleton file into float32 ``(T, 2, 25, 3)``.

  Raises:
    PkuFormatError: empty file, a line with fewer than 150 numbers, a token
      that is not a number, or a NaN/inf value (file and line named).
  """
  lines = _read_lines(path)
  if not lines:
    raise PkuFormatError(
      path, None, 'at least one frame line of 150 numbers', 'an empty file'
    )
  try:  # fast C parser; any doubt falls through to the line-by-line check
    values = np.loadtxt(
      lines, dtype=np.float64, comments=None, ndmin=2, usecols=range(NUM_VALUES)
    )
  except ValueError:
    values = None
  if values is None or values.shape[0] != len(lines):  # blank lines skipped
    values = _parse_rows(path, lines)
  # Cast first: values beyond float32 range become inf and are caught too.
  with np.errstate(over='ignore'):
    skeleton = values.astype(np.float32)
  bad = np.argwhere(~np.isfinite(skeleton))
  if bad.size:
    row, col = (int(i) for i in bad[0])
    token = lines[row].split()[col]
    raise PkuFormatError(
      path, row + 1, f'finite float32 values (value {col + 1})', token
    )
  return skeleton.reshape(-1, NUM_PERSONS, NUM_JOINTS, 3)


def _parse_rows(path, lines):
  """Slow path of parse_skeleton that names the offending line."""
  rows = []
  for lineno, line in enumerate(lines, 1):
    tokens = line.split()  # also eats the leading space of later lines
    if len(tokens) < NUM_VALUES:
      raise PkuFormatError(
        path,
        lineno,
        f'at least {NUM_VALUES} whitespace-separated numbers '
        '(2 persons x 25 joints x xyz)',
        f'{len(tokens)} values',
      )
    rows.append(tokens[:NUM_VALUES])  # extra columns are appendix data
  try:
    values = np.array(rows, dtype=np.float64)
  except ValueError:
    for lineno, row in enumerate(rows, 1):
      for col, token in enumerate(row, 1):
        try:
          float(token)
        except ValueError:
          raise PkuFormatError(
            path, lineno, f'a number (value {col})', token
          ) from None
    raise PkuFormatError(path, None, 'decimal numbers') from None
  return values


def parse_labels(path, *, strict):
  """Reads a label file into int32 ``(S, 4)`` rows (label, start, end, conf).

  Rows are kept as written except that lenient mode swaps start > end (and
  says so in the returned notes); strict mode raises instead.

  Returns:
    ``(segments, notes)``.

  Raises:
    PkuFormatError: a line without exactly 4 integer fields, a label outside
      1..NUM_CLASSES, a negative frame index, or (strict) start > end.
  """
  segments, notes = [], []
  for lineno, line in enumerate(_read_lines(path), 1):
    tokens = line.replace(',', ' ').split()
    if not tokens:  # a blank line carries no segment; nothing is lost
      continue
    if len(tokens) != 4:
      raise PkuFormatError(
        path,
        lineno,
        "4 integers 'label,start,end,confidence' (commas or whitespace)",
        line.strip(),
      )
    try:
      label, start, end, conf = (int(t) for t in tokens)
    except ValueError:
      raise PkuFormatError(
        path, lineno, 'integer fields', line.strip()
      ) from None
    if not 1 <= label <= NUM_CLASSES:
      raise PkuFormatError(
        path, lineno, f'a class label in 1..{NUM_CLASSES}', tokens[0]
      )
    if start < 0 or end < 0:
      raise PkuFormatError(
        path, lineno, 'non-negative frame indices', line.strip()
      )
    if start > end:
      if strict:
        raise PkuFormatError(
          path, lineno, 'start <= end', f'start {start} > end {end}'
        )
      notes.append(f'{path}:{lineno}: start {start} > end {end}, swapped')
      start, end = end, start
    segments.append((label, start, end, conf))
  if not segments:
    notes.append(f'{path}: no segments, every frame is background')
  return np.array(segments, dtype=np.int32).reshape(-1, 4), notes


def frame_labels(segments, num_frames):
  """Per-frame int32 labels from raw segments under ``FRAME_CONVENTION``.

  Class = file label - 1; uncovered frames are ``BACKGROUND``. Overlapping
  segments: the one that starts later wins (a new action takes over at its
  start); equal starts: the later line of the file. Parts past the last
  frame are dropped.

  Returns:
    ``(labels, notes)``; notes mention overlaps and segments that run past
    the end of the skeleton.
  """
  labels = np.full(num_frames, BACKGROUND, np.int32)
  coverage = np.zeros(num_frames, np.int32)
  notes = []
  order = np.argsort(segments[:, 1], kind='stable')
  for i in order:
    label, start, end, _ = (int(v) for v in segments[i])
    if end > num_frames:
      notes.append(
        f'segment {i + 1} ({label},{start},{end}) runs past the '
        f'last frame ({num_frames} frames); clipped'
      )
    labels[start:end] = label - 1  # slicing clips to num_frames
    coverage[start:end] += 1
  overlap = int(np.count_nonzero(coverage > 1))
  if overlap:
    notes.append(
      f'{overlap} frame(s) covered by several segments; the later '
      'starting segment wins'
    )
  return labels, notes


# ---------------------------------------------------------------------------
# One video -> one example (runs in worker processes).
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class VideoItem:
  """Everything ``convert_video`` needs; picklable for worker processes.

  ``split_file``/``split_line`` locate the listing, for errors about files
  that do not exist.
  """

  video_id: str
  skeleton_path: str | None
  label_path: str | None
  split_file: str
  split_line: int
  manual_dir: str
  strict: bool = False

  def __str__(self):  # SkipReport records str(item)
    return self.video_id


def convert_video(item):
  """Parses one video into the builder's example dict plus ``'notes'``."""
  vid = item.video_id
  if item.skeleton_path is None:
    raise PkuFormatError(
      item.split_file,
      item.split_line,
      f'a skeleton file {vid}{"/".join(SKELETON_EXTS)} under '
      f'{item.manual_dir} for listed video {vid}',
      'none',
    )
  if item.label_path is None:
    raise PkuFormatError(
      item.split_file,
      item.split_line,
      f'a label file {vid}{"/".join(LABEL_EXTS)} under {item.manual_dir} '
      f'for listed video {vid}',
      'none',
    )
  skeleton = parse_skeleton(item.skeleton_path)
  segments, notes = parse_labels(item.label_path, strict=item.strict)
  labels, frame_notes = frame_labels(segments, skeleton.shape[0])
  notes += [f'{item.label_path}: {n}' for n in frame_notes]
  return {
    'skeleton': skeleton,
    'labels': labels,
    'segments': segments,
    'num_frames': np.int32(skeleton.shape[0]),
    'sequence_id': vid,
    'view': vid.rsplit('-', 1)[1],
    'notes': notes,
  }
