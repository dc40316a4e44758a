"""TFDS builder for BABEL temporal action localization on NTU-25 skeletons.

Reads the BABEL v1.0 release (``train.json``, ``val.json``) and the AMASS
SMPL-H ``.npz`` files from ``manual_dir``, converts poses to NTU-25 joints at
30 fps with the user's SMPL-H male model, and writes per-frame labels.
Protocol: docs/data_and_eval.md §3 and docs/method.md §7; decisions:
README.md here.
"""

import dataclasses
import functools
import json
import math
import os

import numpy as np
import tensorflow_datasets as tfds

from data_builders import common
from data_builders.babel import amass
from data_builders.babel import smplh
from skel_jax import graph

SmplhModelError = smplh.SmplhModelError  # a missing or unusable model file

FPS = 30.0
BACKGROUND = 4
MAX_FRAMES = 1000
SPLITS = ('train', 'val')
# line/Skeleton-Temporal-Action-Localization prepare/configs/
# action_label_split{1,2,3}.json: class index = position.
SUBSET_CLASSES = {
  1: ('walk', 'stand', 'turn', 'jump'),
  2: ('sit', 'run', 'stand up', 'kick'),
  3: ('jog', 'wave', 'dance', 'gesture'),
}
LABEL_RULE = (
  'frame n (t = n/30 s, n < min(int(30*dur), skeleton frames)) '
  'gets the lowest subset class index among the categories of the '
  'frame_ann segments with start_t <= t < end_t; background (4) '
  'when there is none'
)

_DESCRIPTION = """\
BABEL v1.0 dense frame annotations over AMASS motion capture, as untrimmed
single-person NTU RGB+D 25-joint skeletons at 30 fps (SMPL-H male forward
kinematics, zero betas, no translation; BABEL's joint map). Configs `subset1`,
`subset2`, `subset3` are the 4-class temporal action localization subsets with
background = 4 (sequences over 1000 frames or without a subset class dropped);
`full` keeps every sequence with frame annotations and a per-frame multi-hot
over the 150 BABEL action categories (for pretraining). Splits: `train`
(train.json) and `val` (val.json).
"""

_MANUAL = """\
Put in manual_dir (either layout works):
  babel_v1.0_release/train.json, babel_v1.0_release/val.json  (or directly
  train.json, val.json) from https://babel.is.tue.mpg.de, and the AMASS SMPL+H
  "G" npz files under amass/ (or directly in manual_dir), as unpacked
  (<dataset-dir>/<subject>/<name>_poses.npz) or as BABEL's feat_p spells them.
Pass the licensed SMPL-H male model (smplx-style SMPLH_male.pkl of plain
arrays, or .npz) as smplh_model=PATH.
"""


@functools.lru_cache(maxsize=None)
def category_names():
  """The 150 BABEL categories in index order (action_label_2_idx.json)."""
  path = os.path.join(os.path.dirname(__file__), 'categories.txt')
  with open(path, encoding='utf-8') as f:
    names = tuple(line.rstrip('\n') for line in f if line.strip())
  assert len(names) == 150, path
  return names


@dataclasses.dataclass(eq=False)
class BabelConfig(tfds.core.BuilderConfig):
  """One BABEL variant.

  Attributes:
    classes: the subset's class names (index = position); empty for `full`.
    max_frames: drop sequences longer than this at 30 fps (None: keep all).
  """

  classes: tuple = ()
  max_frames: int = None


# ---------------------------------------------------------------------------
# BABEL JSON.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Segment:
  categories: tuple  # act_cat (empty when None)
  start_t: float
  end_t: float


@dataclasses.dataclass(frozen=True)
class Sequence:
  sid: str
  feat_p: str
  dur: float
  segments: tuple  # of Segment; None when there is no frame_ann


def load_release(path):
  """The raw dict of one BABEL json file (keyed by str(babel_sid))."""
  if not os.path.isfile(path):
    raise common.RawFormatError(
      path,
      None,
      'the BABEL release file (see the manual download instructions)',
      'no file',
    )
  try:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise common.RawFormatError(path, e.lineno, 'valid JSON', e.msg) from None
  if not isinstance(data, dict):
    raise common.RawFormatError(
      path, None, 'a JSON object keyed by babel_sid', type(data).__name__
    )
  return data


def _number(x):
  return (
    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
  )


def parse_entry(path, key, entry):
  """Validates one BABEL entry into a Sequence.

  Raises:
    RawFormatError: naming the file, the entry/field and the expectation.
  """
  where = f'[{key!r}]'

  def fail(field, expected, found=None):
    raise common.RawFormatError(path, where + field, expected, found)

  if not isinstance(entry, dict):
    fail('', 'an object', type(entry).__name__)
  for field in ('babel_sid', 'feat_p', 'dur', 'frame_ann'):
    if field not in entry:
      fail('', f'field {field!r}', f'fields {sorted(entry)}')
  sid = entry['babel_sid']
  if not (isinstance(sid, int) and not isinstance(sid, bool)) and not (
    isinstance(sid, str) and sid.isdigit()
  ):
    fail('.babel_sid', 'an integer', sid)
  if not isinstance(entry['feat_p'], str) or not entry['feat_p']:
    fail('.feat_p', 'a non-empty AMASS path', entry['feat_p'])
  dur = entry['dur']
  if not _number(dur) or dur <= 0:
    fail('.dur', 'a positive duration in seconds', dur)
  ann = entry['frame_ann']
  segments = None
  if ann is not None:
    if not isinstance(ann, dict) or not isinstance(ann.get('labels'), list):
      fail(
        '.frame_ann',
        "null or an object with a 'labels' list",
        ann if not isinstance(ann, dict) else sorted(ann),
      )
    segs = []
    for i, seg in enumerate(ann['labels']):
      at = f'.frame_ann.labels[{i}]'
      if not isinstance(seg, dict):
        fail(at, 'a segment object', type(seg).__name__)
      for field in ('act_cat', 'start_t', 'end_t'):
        if field not in seg:
          fail(at, f'field {field!r}', f'fields {sorted(seg)}')
      cats = seg['act_cat']
      if cats is not None and not (
        isinstance(cats, list) and all(isinstance(c, str) for c in cats)
      ):
        fail(at + '.act_cat', 'null or a list of category strings', cats)
      start, end = seg['start_t'], seg['end_t']
      if not _number(start):
        fail(at + '.start_t', 'a finite number of seconds', start)
      if not _number(end):
        fail(at + '.end_t', 'a finite number of seconds', end)
      if end < start:
        fail(at, 'end_t >= start_t', f'start_t={start}, end_t={end}')
      segs.append(Segment(tuple(cats or ()), float(start), float(end)))
    segments = tuple(segs)
  return Sequence(
    sid=str(sid), feat_p=entry['feat_p'], dur=float(dur), segments=segments
  )


def num_label_frames(dur):
  """Frames the annotation covers at 30 fps (BABEL: int(30.0 * dur))."""
  return int(FPS * dur)


def _frame_hits(segments, num_frames, vocabulary):
  """(T, len(vocabulary)) bool: frame n carries the category (start <= n/30 <
  end, BABEL's comparison on float seconds)."""
  index = {name: i for i, name in enumerate(vocabulary)}
  t = np.arange(num_frames, dtype=np.float64) / FPS
  hits = np.zeros((num_frames, len(vocabulary)), bool)
  for seg in segments:
    cols = [index[c] for c in seg.categories if c in index]
    if cols:
      mask = (t >= seg.start_t) & (t < seg.end_t)
      hits[np.ix_(mask, cols)] = True
  return hits


def subset_labels(segments, num_frames, classes):
  """(T,) int32 per-frame labels: lowest class index present, else background.

  The reference takes ``list(set)[0]`` of the frame's subset classes, which
  depends on string hashing; the lowest index is a deterministic replacement.
  """
  hits = _frame_hits(segments, num_frames, classes)
  return np.where(hits.any(axis=1), hits.argmax(axis=1), len(classes)).astype(
    np.int32
  )


def category_multi_hot(segments, num_frames):
  """(T, 150) uint8: every BABEL category of frame n (outside ones dropped)."""
  return _frame_hits(segments, num_frames, category_names()).astype(np.uint8)


# ---------------------------------------------------------------------------
# Builder.
# ---------------------------------------------------------------------------
def _as_bool(x):
  if isinstance(x, str):
    if x.lower() in ('1', 'true', 'yes', 'y', 'on'):
      return True
    if x.lower() in ('0', 'false', 'no', 'n', 'off', ''):
      return False
    raise ValueError(f'expected a boolean, found {x!r}')
  return bool(x)


def _find_release_file(manual_dir, split):
  for sub in ('babel_v1.0_release', ''):
    path = os.path.join(manual_dir, sub, f'{split}.json')
    if os.path.isfile(path):
      return path
  raise common.RawFormatError(
    os.path.join(manual_dir, 'babel_v1.0_release', f'{split}.json'),
    None,
    f'the BABEL release file {split}.json in manual_dir/babel_v1.0_release '
    'or manual_dir',
    'no such file',
  )


class Builder(tfds.core.GeneratorBasedBuilder):
  """BABEL v1.0 on NTU-25 skeletons: TAL subsets and a full pretraining set."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
  BUILDER_CONFIGS = [
    BabelConfig(
      name=f'subset{k}',
      description=(
        f'TAL subset {k}: {", ".join(c)} + background (4); sequences over '
        f'{MAX_FRAMES} frames or without a subset class dropped.'
      ),
      classes=c,
      max_frames=MAX_FRAMES,
    )
    for k, c in SUBSET_CLASSES.items()
  ] + [
    BabelConfig(
      name='full',
      description=(
        'Every train/val sequence with frame annotations; per-frame '
        'multi-hot over the 150 BABEL categories.'
      ),
    )
  ]
  DEFAULT_CONFIG_NAME = 'subset1'

  def __init__(
    self,
    *,
    strict=False,
    num_workers=None,
    smplh_model=None,
    flat_hand_mean=False,
    **kwargs,
  ):
    """Args:
    strict: raise on the first malformed raw file instead of skipping it
      and recording it in ``skipped_<split>.json``.
    num_workers: conversion processes (None: CPU count up to 8; 0: inline).
    smplh_model: path of the SMPL-H male model, needed only to build.
    flat_hand_mean: skip the mean hand pose smplx adds by default (a
      deviation from BABEL's joints; see smplh.py).
    **kwargs: passed to GeneratorBasedBuilder (config, data_dir, ...).
    """
    self._strict = _as_bool(strict)
    self._num_workers = None if num_workers in (None, '') else int(num_workers)
    self._smplh_model = (
      None if smplh_model in (None, '') else os.fspath(smplh_model)
    )
    self._flat_hand_mean = _as_bool(flat_hand_mean)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    feats = {
      'skeleton': tfds.features.Tensor(
        shape=(None, 1, graph.NUM_JOINTS, 3), dtype=np.float32
      ),
      'num_frames': np.int32,
      'sequence_id': tfds.features.Text(),
      'feat_p': tfds.features.Text(),
      'fps': np.float32,
    }
    meta = dict(
      fps=FPS,
      coordinate_frame=(
        'AMASS/SMPL world frame (z up), metres, global orientation applied, '
        'no translation (the body root stays at the rest pelvis)'
      ),
      joint_map='BABEL smpl_to_nturgbd (NTU 22-25 swap kept)',
      flat_hand_mean=self._flat_hand_mean,
    )
    if cfg.classes:
      feats['labels'] = tfds.features.Tensor(shape=(None,), dtype=np.int32)
      meta.update(
        class_names=list(cfg.classes) + ['background'],
        background_label=len(cfg.classes),
        max_frames=cfg.max_frames,
        label_rule=LABEL_RULE,
      )
    else:
      feats['categories'] = tfds.features.Tensor(
        shape=(None, len(category_names())), dtype=np.uint8
      )
      meta.update(category_names=list(category_names()))
    return self.dataset_info_from_configs(
      description=_DESCRIPTION,
      features=tfds.features.FeaturesDict(feats),
      supervised_keys=None,
      homepage='https://babel.is.tue.mpg.de',
      metadata=tfds.core.MetadataDict(**meta),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    # Fail on the model and the release files before converting anything.
    model_path = self._smplh_model and os.path.abspath(self._smplh_model)
    amass.cached_model(model_path, self._flat_hand_mean)
    releases = {s: _find_release_file(manual_dir, s) for s in SPLITS}
    roots = tuple(
      os.path.abspath(r)
      for r in (os.path.join(manual_dir, 'amass'), manual_dir)
      if os.path.isdir(r)
    )
    plans = {s: self._plan(s, releases[s], roots, model_path) for s in SPLITS}
    return {s: self._generate_examples(s, *plans[s]) for s in SPLITS}

  def _plan(self, split, release, roots, model_path):
    """Parses one json file into conversion tasks; protocol drops are noted."""
    cfg = self.builder_config
    report = common.SkipReport(f'babel/{cfg.name}', split)
    data = load_release(release)
    tasks, seqs, seen = [], {}, set()
    for key, entry in data.items():
      try:
        seq = parse_entry(release, key, entry)
      except common.RawFormatError as e:
        if self._strict:
          raise
        report.add(f'babel_sid {key} ({release})', e)
        continue
      name = f'babel_sid {seq.sid} ({seq.feat_p})'
      if seq.sid in seen:  # it becomes the example key
        err = common.RawFormatError(
          release,
          f'[{key!r}].babel_sid',
          'a babel_sid unique in the file',
          seq.sid,
        )
        if self._strict:
          raise err
        report.add(name, err)
        continue
      seen.add(seq.sid)
      if seq.segments is None:
        report.add(name, 'no frame_ann (sequence-level labels only)')
        continue
      n = num_label_frames(seq.dur)
      if n == 0:
        report.add(name, f'dur={seq.dur} s covers no 30-fps frame')
        continue
      if (
        cfg.classes
        and not (
          subset_labels(seq.segments, n, cfg.classes) != BACKGROUND
        ).any()
      ):
        report.add(
          name,
          f'no frame carries a {cfg.name} class ({", ".join(cfg.classes)})',
        )
        continue
      seqs[seq.sid] = seq
      tasks.append(
        amass.SequenceTask(
          sid=seq.sid,
          feat_p=seq.feat_p,
          roots=roots,
          model_path=model_path,
          flat_hand_mean=self._flat_hand_mean,
          num_label_frames=n,
          max_frames=cfg.max_frames,
        )
      )
    return tasks, seqs, report

  def _generate_examples(self, split, tasks, seqs, report):
    cfg = self.builder_config
    results = common.convert_parallel(
      amass.convert_sequence,
      tasks,
      strict=self._strict,
      report=report,
      num_workers=self._num_workers,
      desc=f'babel/{cfg.name}/{split}',
    )
    for task, res in results:
      if res.dropped:
        report.converted -= 1  # counted by convert_parallel, but not kept
        report.add(task, res.dropped)
        continue
      seq, t = seqs[task.sid], len(res.skeleton)
      ex = {
        'skeleton': res.skeleton[:, None],
        'num_frames': np.int32(t),
        'sequence_id': seq.sid,
        'feat_p': seq.feat_p,
        'fps': np.float32(res.fps),
      }
      if cfg.classes:
        ex['labels'] = subset_labels(seq.segments, t, cfg.classes)
        if not (ex['labels'] != BACKGROUND).any():  # classes only past the end
          report.converted -= 1
          report.add(
            task, f'no {cfg.name} class within the {t} skeleton frames'
          )
          continue
      else:
        ex['categories'] = category_multi_hot(seq.segments, t)
      yield seq.sid, ex
    # data_path is TFDS's temporary build folder here; it is renamed to the
    # final dataset folder once every split is written.
    report.write(os.fspath(self.data_path))
    print(report.summary(), flush=True)
    if not report.converted:  # TFDS would fail with a bare "no examples"
      reasons = '; '.join(
        f'{s["sample"]}: {s["reason"]}' for s in report.skipped[:5]
      )
      raise ValueError(
        f'babel/{cfg.name}/{split}: no sequence was kept '
        f'({len(report.skipped)} skipped). First reasons: {reasons or "-"}'
      )
