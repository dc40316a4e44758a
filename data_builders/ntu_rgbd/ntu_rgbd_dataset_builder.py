"""TFDS builder for NTU RGB+D 60 / 120 skeletons (raw ``.skeleton`` files).

Every example stores all body records of one sample losslessly (up to float32),
so each preprocessing family of ``skel_jax.preprocess`` can be derived later;
see README.md for the feature layout and the handling of format quirks.
"""

import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from data_builders.common import RawFormatError
from data_builders.common import SkipReport
from data_builders.common import convert_parallel
from data_builders.ntu_rgbd import skeleton_file
from skel_jax.preprocess import to_dense  # re-exported for quick use

__all__ = ['Builder', 'NtuConfig', 'to_dense', 'split_of', 'in_config']

_HERE = os.path.dirname(os.path.abspath(__file__))
# Package data copied verbatim from shared/ntu/ (official lists and class names
# from shahroudy/NTURGB-D: Matlab/*.txt and README.md).
MISSING_LISTS = {
  'ntu60': os.path.join(_HERE, 'NTU_RGBD_samples_with_missing_skeletons.txt'),
  'ntu120': os.path.join(
    _HERE, 'NTU_RGBD120_samples_with_missing_skeletons.txt'
  ),
}
CLASS_NAMES_FILE = os.path.join(_HERE, 'ntu120_class_names.txt')

# Official protocols (docs/data_and_eval.md §1.5).
NTU60_TRAIN_PERFORMERS = frozenset(
  (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
)
NTU120_TRAIN_PERFORMERS = NTU60_TRAIN_PERFORMERS | frozenset(
  (
    45,
    46,
    47,
    49,
    50,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    70,
    74,
    78,
    80,
    81,
    82,
    83,
    84,
    85,
    86,
    89,
    91,
    92,
    93,
    94,
    95,
    97,
    98,
    100,
    103,
  )
)
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))
SPLITS = ('train', 'test')

_DESCRIPTION = """\
NTU RGB+D 60 / 120 Kinect v2 skeletons, one example per sample, stored
losslessly: every body record of every frame in file order (body id as int64,
xyz, depth/colour pixel positions, joint orientations and tracking states,
body-line fields), the frame count, and the setup/camera/performer/replication
ids and the 0-based action label. Samples with missing skeletons (official
lists) are dropped. Splits follow the official cross-subject, cross-view and
cross-setup protocols.
"""

_INSTRUCTIONS = """\
Request NTU RGB+D / NTU RGB+D 120 from
https://rose1.ntu.edu.sg/dataset/actionRecognition/ and download the
skeleton archives (nturgbd_skeletons_s001_to_s017.zip, and for NTU-120 also
nturgbd_skeletons_s018_to_s032.zip). Unzip them anywhere under
`manual_dir` (e.g. `nturgb+d_skeletons/` and `nturgbd_skeletons_s018_to_s032/`):
`.skeleton` files are found recursively. The ntu60 configs ignore setups > 17
and actions > 60, so one folder holding both archives serves all configs.
"""


@dataclasses.dataclass(eq=False)
class NtuConfig(tfds.core.BuilderConfig):
  """One benchmark protocol.

  Attributes:
    num_classes: 60 (setups 1-17, actions 1-60) or 120.
    benchmark: 'xsub' (performers), 'xview' (cameras, NTU-60 only) or 'xset'
      (setups, NTU-120 only).
  """

  num_classes: int = 60
  benchmark: str = 'xsub'

  @property
  def version_set(self) -> str:
    return f'ntu{self.num_classes}'


def in_config(name: skeleton_file.SampleName, config: NtuConfig) -> bool:
  """Whether a sample belongs to the config's dataset (NTU-60 or NTU-120)."""
  if config.num_classes == 60:
    return name.setup <= 17 and name.action <= 60
  return True


def split_of(name: skeleton_file.SampleName, config: NtuConfig) -> str:
  """'train' or 'test' under the config's official protocol."""
  if config.benchmark == 'xsub':
    train = (
      NTU60_TRAIN_PERFORMERS
      if config.num_classes == 60
      else NTU120_TRAIN_PERFORMERS
    )
    is_train = name.performer in train
  elif config.benchmark == 'xview':
    is_train = name.camera in XVIEW_TRAIN_CAMERAS
  elif config.benchmark == 'xset':
    is_train = name.setup % 2 == 0
  else:
    raise ValueError(f'unknown benchmark {config.benchmark!r}')
  return 'train' if is_train else 'test'


def class_names(num_classes: int = 120) -> list:
  """Action names A001.. in label order (0-based), from the official README."""
  with open(CLASS_NAMES_FILE, encoding='utf-8') as f:
    rows = [line.rstrip('\n').split('\t') for line in f if line.strip()]
  names = [name for _, name in rows]
  assert [code for code, _ in rows] == [f'A{i:03d}' for i in range(1, 121)]
  return names[:num_classes]


def list_skeleton_files(root) -> list:
  """All ``*.skeleton`` files under ``root`` (recursively, following symlinked
  folders), sorted by stem then path so builds are deterministic."""
  found = []
  for dirpath, _, filenames in os.walk(os.fspath(root), followlinks=True):
    found.extend(
      os.path.join(dirpath, f) for f in filenames if f.endswith('.skeleton')
    )
  return sorted(found, key=lambda p: (os.path.basename(p), p))


def _joints(dims, dtype):
  # Raw bytes: ~3x faster to write than TFDS's default per-value proto lists,
  # and it keeps int64 body ids exact.
  return tfds.features.Tensor(
    shape=(None,) + dims, dtype=dtype, encoding=tfds.features.Encoding.BYTES
  )


class Builder(tfds.core.GeneratorBasedBuilder):
  """NTU RGB+D 60/120 skeletons with lossless per-sample body records."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
    NtuConfig(
      name='ntu60_xsub',
      num_classes=60,
      benchmark='xsub',
      description='NTU-60 cross-subject (20 training performers).',
    ),
    NtuConfig(
      name='ntu60_xview',
      num_classes=60,
      benchmark='xview',
      description='NTU-60 cross-view (train cameras 2, 3).',
    ),
    NtuConfig(
      name='ntu120_xsub',
      num_classes=120,
      benchmark='xsub',
      description='NTU-120 cross-subject (53 training performers).',
    ),
    NtuConfig(
      name='ntu120_xset',
      num_classes=120,
      benchmark='xset',
      description='NTU-120 cross-setup (even setups train).',
    ),
  ]
  DEFAULT_CONFIG_NAME = 'ntu60_xsub'

  def __init__(self, *, strict=False, num_workers=None, **kwargs):
    """Args: strict: raise ``RawFormatError`` on the first malformed file
    instead of skipping it (recorded in ``skipped_<split>.json``);
    num_workers: conversion processes (None: CPU count up to 8; 0: in-process).
    Other kwargs go to ``tfds.core.GeneratorBasedBuilder``."""
    self._strict = bool(strict)
    self._num_workers = num_workers
    super().__init__(**kwargs)
    # TFDS re-creates builders from ``_original_state`` when unpickling.
    self._original_state.update(strict=strict, num_workers=num_workers)

  def _info(self) -> tfds.core.DatasetInfo:
    names = class_names(self.builder_config.num_classes)
    return self.dataset_info_from_configs(
      description=_DESCRIPTION,
      features=tfds.features.FeaturesDict(
        {
          'sample_name': tfds.features.Text(),
          'setup': np.int32,
          'camera': np.int32,
          'performer': np.int32,
          'replication': np.int32,
          'label': tfds.features.ClassLabel(names=names),
          'num_frames': np.int32,
          'body_frame': _joints((), np.int32),
          'body_slot': _joints((), np.int32),
          'body_id': _joints((), np.int64),
          'body_info': _joints((6,), np.int32),
          'body_lean': _joints((2,), np.float32),
          'body_tracking_state': _joints((), np.int32),
          'bodies_xyz': _joints((skeleton_file.NUM_JOINTS, 3), np.float32),
          'bodies_depth_xy': _joints((skeleton_file.NUM_JOINTS, 2), np.float32),
          'bodies_color_xy': _joints((skeleton_file.NUM_JOINTS, 2), np.float32),
          'bodies_orientation': _joints(
            (skeleton_file.NUM_JOINTS, 4), np.float32
          ),
          'bodies_joint_tracking': _joints(
            (skeleton_file.NUM_JOINTS,), np.int32
          ),
        }
      ),
      supervised_keys=None,
      homepage='https://rose1.ntu.edu.sg/dataset/actionRecognition/',
      metadata=tfds.core.MetadataDict(
        class_names=names,
        fps=30,
        body_info_fields=list(skeleton_file.BODY_INFO_FIELDS),
        missing_list=os.path.basename(
          MISSING_LISTS[self.builder_config.version_set]
        ),
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    root = dl_manager.manual_dir
    paths = list_skeleton_files(root)
    if not paths:
      raise FileNotFoundError(
        f'no .skeleton files under {root}.\n{_INSTRUCTIONS}'
      )
    missing_file = MISSING_LISTS[cfg.version_set]
    missing = skeleton_file.read_sample_list(missing_file)
    dataset = f'{self.name}/{cfg.name}'
    reports = {s: SkipReport(dataset=dataset, split=s) for s in SPLITS}
    assigned = {s: [] for s in SPLITS}
    seen = {}
    outside = 0
    for path in paths:
      try:
        name = skeleton_file.parse_name(path)
      except RawFormatError as e:
        if self._strict:
          raise
        # No split can be derived from the name: record it in both reports.
        for report in reports.values():
          report.add(path, e)
        continue
      if not in_config(name, cfg):
        outside += 1
        continue
      split = split_of(name, cfg)
      if name.stem in seen:
        err = RawFormatError(
          path,
          None,
          f'one file per sample; {name.stem} is also at {seen[name.stem]}',
        )
        if self._strict:
          raise err
        reports[split].add(path, err)
        continue
      seen[name.stem] = path
      if name.stem in missing:
        reports[split].add(
          path,
          'listed in '
          f'{os.path.basename(missing_file)} (missing or '
          'incomplete skeletons); dropped',
        )
        continue
      assigned[split].append(path)
    if outside:
      logging.info(
        '%s: %d file(s) outside %s (setup > 17 or action > 60) ignored',
        dataset,
        outside,
        cfg.version_set,
      )
    # TFDS cannot write an empty split; a partial raw tree (e.g. one setup)
    # may hold no sample of one split, which is then left out.
    empty = [s for s in SPLITS if not assigned[s]]
    if len(empty) == len(SPLITS):
      raise ValueError(
        f'{dataset}: no usable .skeleton file under {root} '
        f'({sum(len(r.skipped) for r in reports.values())} '
        'skipped)'
      )
    for s in empty:
      logging.warning('%s: no sample for split %r; split omitted', dataset, s)
      reports[s].write(os.fspath(self.data_path))
    return {
      s: self._generate_examples(s, assigned[s], reports[s])
      for s in SPLITS
      if assigned[s]
    }

  def _generate_examples(self, split, paths, report):
    for _, example in convert_parallel(
      skeleton_file.convert,
      paths,
      strict=self._strict,
      report=report,
      num_workers=self._num_workers,
      desc=f'{self.name}/{split}',
    ):
      yield example['sample_name'], example
    if not report.converted:
      # Raised here (TFDS would fail anyway) so the reasons are not lost with
      # the temporary directory.
      raise ValueError(
        f'{report.dataset}/{split}: every file was skipped: '
        f'{report.skipped[:3]}'
      )
    # During download_and_prepare ``data_path`` is TFDS's temporary
    # directory, renamed to the final one only after every split succeeded,
    # so the report lands next to the data (tests/test_ntu_builder.py).
    written = report.write(os.fspath(self.data_path))
    logging.info('%s -> %s', report.summary(), written)
