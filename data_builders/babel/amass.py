"""AMASS ``.npz`` reading, BABEL ``feat_p`` resolution, 30-fps subsampling, and
the per-sequence conversion that runs in ``convert_parallel`` workers.

See docs/data_and_eval.md §3.2 (npz keys, path mappings), §3.4 (subsampling).
"""

import dataclasses
import os
import zipfile
import zlib

import numpy as np

from data_builders import common
from data_builders.babel import smplh

OUT_FPS = 30
# AMASS/BABEL rates lie in 59.99..250. Below 30 fps BABEL's rule would repeat
# frames, and a rate outside this range means a corrupt file.
MIN_FPS, MAX_FPS = 30.0, 1000.0

# Dataset folder names that differ between AMASS releases / BABEL's layout.
DATASET_DIR_ALIASES = {
  'BMLrub': 'BioMotionLab_NTroje',
  'BioMotionLab_NTroje': 'BMLrub',
  'DFaust': 'DFaust_67',
  'DFaust_67': 'DFaust',
}

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


# ---------------------------------------------------------------------------
# Paths.
# ---------------------------------------------------------------------------
def candidate_paths(feat_p):
  """Relative paths to try for a BABEL ``feat_p``, most literal first.

  ``feat_p`` is ``<archive>/<dataset-dir>/<subject>/<file>.npz``. AMASS
  downloads unpack to ``<dataset-dir>/<subject>/<file>`` (so the first
  component goes), and the dataset folder is ``BMLrub`` or
  ``BioMotionLab_NTroje`` (``DFaust`` or ``DFaust_67``) depending on the AMASS
  release, so both spellings are tried.
  """
  parts = [p for p in str(feat_p).replace('\\', '/').split('/') if p]
  variants = [parts, parts[1:]] if len(parts) > 1 else [parts]
  out = []
  for v in variants:
    forms = [v]
    if len(v) >= 3 and v[-3] in DATASET_DIR_ALIASES:
      forms.append(v[:-3] + [DATASET_DIR_ALIASES[v[-3]]] + v[-2:])
    for form in forms:
      rel = '/'.join(form)
      if rel not in out:
        out.append(rel)
  return out


def resolve(feat_p, roots):
  """The first existing AMASS file for ``feat_p`` under any of ``roots``.

  Raises:
    RawFormatError: naming ``feat_p`` and every place that was tried.
  """
  parts = str(feat_p).replace('\\', '/').split('/')
  if not feat_p or os.path.isabs(str(feat_p)) or '..' in parts:
    raise common.RawFormatError(
      feat_p, None, 'a relative AMASS path without ".."'
    )
  cands = candidate_paths(feat_p)
  for root in roots:
    for rel in cands:
      path = os.path.join(root, rel)
      if os.path.isfile(path):
        return path
  raise common.RawFormatError(
    feat_p,
    None,
    f'an AMASS .npz at one of {cands} under one of {list(roots)}',
    'no such file',
  )


# ---------------------------------------------------------------------------
# npz reading.
# ---------------------------------------------------------------------------
def read_npz(path):
  """Reads ``poses`` (T, 156) float64 and ``mocap_framerate`` from an AMASS npz.

  Raises:
    RawFormatError: naming the file, the key and what was expected.
  """
  try:
    z = np.load(path, allow_pickle=False)
  except _READ_ERRORS as e:
    raise common.RawFormatError(
      path, None, 'a readable AMASS .npz archive', f'{type(e).__name__}: {e}'
    ) from None
  if not isinstance(z, np.lib.npyio.NpzFile):
    raise common.RawFormatError(
      path, None, 'an .npz archive', f'a single {type(z).__name__}'
    )
  with z:
    for key, what in (
      ('poses', '(T, 156) SMPL-H axis-angle poses'),
      ('mocap_framerate', 'a scalar frame rate'),
    ):
      if key not in z.files:
        raise common.RawFormatError(
          path, f'key {key!r}', f'{key}: {what}', f'keys {sorted(z.files)}'
        )
    try:
      poses = z['poses']
      rate = z['mocap_framerate']
    except _READ_ERRORS as e:
      raise common.RawFormatError(
        path, None, 'readable numeric arrays', f'{type(e).__name__}: {e}'
      ) from None
  if (
    poses.dtype.kind not in 'iuf'
    or poses.ndim != 2
    or poses.shape[1] != smplh.POSE_WIDTH
    or poses.shape[0] < 1
  ):
    raise common.RawFormatError(
      path,
      "key 'poses'",
      f'a numeric (T >= 1, {smplh.POSE_WIDTH}) array '
      '(root, 21 body, 2 x 15 hand joints)',
      f'{poses.dtype} array of shape {poses.shape}',
    )
  poses = poses.astype(np.float64)
  bad = ~np.all(np.isfinite(poses), axis=1)
  if bad.any():
    raise common.RawFormatError(
      path,
      "key 'poses'",
      'finite values',
      f'NaN/inf in {int(bad.sum())} frame(s), first at frame '
      f'{int(np.argmax(bad))}',
    )
  if rate.dtype.kind not in 'iuf' or rate.size != 1:
    raise common.RawFormatError(
      path,
      "key 'mocap_framerate'",
      'a numeric scalar',
      f'{rate.dtype} array of shape {rate.shape}',
    )
  fps = float(rate.reshape(()))
  if not (np.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
    raise common.RawFormatError(
      path,
      "key 'mocap_framerate'",
      f'a frame rate in [{MIN_FPS:g}, {MAX_FPS:g}] fps',
      fps,
    )
  return poses, fps


# ---------------------------------------------------------------------------
# 30-fps subsampling.
# ---------------------------------------------------------------------------
def subsample_indices(num_frames, fps):
  """Frame indices BABEL's ``_subsample_to_30fps`` keeps, bit for bit.

  With F = int(fps): if F is not a multiple of 30, every F-frame "second"
  contributes frames floor(fps/30 * k), k = 0..29 (the float fps, so 59.99 fps
  uses 59-frame seconds with an irregular pattern), and a trailing partial
  second contributes those below ``num_frames``. Otherwise the indices are
  ``np.arange(0, T, fps / 30, dtype=int)``: NumPy casts the first step to int,
  so 120.00004 fps gives exactly every 4th frame.
  """
  f = float(fps)
  whole = int(f)
  if whole <= 0:
    raise ValueError(f'fps must be >= 1, got {fps}')
  t = int(num_frames)
  if whole % OUT_FPS:
    sel = np.floor(f / float(OUT_FPS) * np.arange(OUT_FPS)).astype(np.int64)
    n_sec = t // whole
    idx = (np.arange(n_sec, dtype=np.int64)[:, None] * whole + sel).ravel()
    if t % whole:
      tail = n_sec * whole + sel
      idx = np.concatenate([idx, tail[tail < t]])
    return idx
  return np.arange(0, t, f / float(OUT_FPS), dtype=int).astype(np.int64)


# ---------------------------------------------------------------------------
# Per-sequence conversion (runs in worker processes).
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SequenceTask:
  """One BABEL sequence to convert (small and picklable).

  Attributes:
    sid: ``babel_sid`` as a string.
    feat_p: BABEL's AMASS path.
    roots: folders to resolve ``feat_p`` under.
    model_path: SMPL-H model file.
    flat_hand_mean: see ``smplh``.
    num_label_frames: int(30 * dur), the frames the annotation covers.
    max_frames: drop the sequence when its final length exceeds this.
  """

  sid: str
  feat_p: str
  roots: tuple
  model_path: str
  flat_hand_mean: bool = False
  num_label_frames: int = 0
  max_frames: int = None

  def __str__(self):  # what the skip report shows
    return f'babel_sid {self.sid} ({self.feat_p})'


@dataclasses.dataclass
class SequenceResult:
  """Converted skeleton, or the protocol reason for dropping the sequence."""

  skeleton: np.ndarray  # (T, 25, 3) float32, or None when dropped
  fps: float
  path: str
  dropped: str = None


_MODELS = {}


def cached_model(path, flat_hand_mean):
  """Compact SMPL-H model, loaded once per process and file version.

  Raises:
    SmplhModelError: the path is missing or the model is unusable.
  """
  if not path or not os.path.isfile(path):
    smplh.load_model(path)  # raises, with instructions
  st = os.stat(path)
  key = (
    os.path.realpath(path),
    st.st_mtime_ns,
    st.st_size,
    bool(flat_hand_mean),
  )
  if key not in _MODELS:
    _MODELS[key] = smplh.load_model(
      path, flat_hand_mean=flat_hand_mean
    ).compact()
  return _MODELS[key]


def ntu_skeleton(model, poses, fps, num_frames=None):
  """AMASS poses at ``fps`` -> (T, 25, 3) float32 NTU joints at 30 fps.

  FK runs only on the kept frames (it is per-frame, so this equals BABEL's
  FK-then-subsample). ``num_frames`` truncates the 30-fps sequence.
  """
  idx = subsample_indices(len(poses), fps)
  if num_frames is not None:
    idx = idx[:num_frames]
  return smplh.to_ntu(smplh.forward(model, poses[idx])).astype(np.float32)


def convert_sequence(task):
  """``convert_parallel`` worker: resolve, read, subsample, FK, NTU map.

  The kept length is min(int(30 * dur), 30-fps skeleton length): the labelled
  frames, capped at the skeleton.
  """
  path = resolve(task.feat_p, task.roots)
  poses, fps = read_npz(path)
  length = min(task.num_label_frames, len(subsample_indices(len(poses), fps)))
  if task.max_frames is not None and length > task.max_frames:
    return SequenceResult(
      None,
      fps,
      path,
      f'{length} frames at 30 fps > max_frames='
      f'{task.max_frames} (protocol drop)',
    )
  if length == 0:
    return SequenceResult(None, fps, path, 'no frames at 30 fps')
  model = cached_model(task.model_path, task.flat_hand_mean)
  return SequenceResult(ntu_skeleton(model, poses, fps, length), fps, path)
