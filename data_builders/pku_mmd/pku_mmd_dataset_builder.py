"""TFDS builder for PKU-MMD phase 1 (untrimmed skeleton action detection).

  python -m skel_jax.build_data --dataset=pku_mmd/v1_xsub \
      --manual_dir=/data/PKU-MMD --data_dir=data [--strict] [--num_workers=8]

Raw-file parsing lives in ``raw_files`` (conventions in README.md).
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_builders import common
from data_builders.pku_mmd import raw_files

_DESCRIPTION = """\
PKU-MMD phase 1: 1,076 untrimmed Kinect v2 videos (3 views, 30 fps) of 51
actions, with two-person 25-joint skeletons and temporally localised action
instances. Each example is one video: `skeleton` (T, 2, 25, 3) float32,
per-frame `labels` (T,) int32 with classes 0..50 (file label - 1) and
background = 51, and the raw `segments` (S, 4) int32 rows
(label 1..51, start, end, confidence) exactly as in the label file (except
lenient builds swap start > end). Per-frame labels cover rows
[start, end) (0-based, end exclusive); where segments overlap the later
starting one wins. Splits come from the official split file of the config.
"""

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download PKU-MMD phase 1
(https://www.icst.pku.edu.cn/struct/Projects/PKUMMD.html) and extract it
into manual_dir, keeping the folders:
  PKU_Skeleton_Renew/ (or Data/SKELETON_VIDEO/): XXXX-V.txt or .skeleton
  Train_Label_PKU_final/ (or Label/):             XXXX-V.txt or .label
  Split/cross-subject.txt, Split/cross-view.txt (any depth; cross_subject.txt
  and cross_view.txt also work)
Other folder names work when they contain 'skel' / 'label', or pass
--builder_option=skeleton_dir=... / label_dir=... .
"""


@dataclasses.dataclass(eq=False)
class PkuConfig(tfds.core.BuilderConfig):
  """One evaluation protocol.

  Attributes:
    protocol: Key of ``raw_files.SPLIT_FILE_NAMES``: the split file to read.
  """

  protocol: str = 'cross_subject'


@dataclasses.dataclass
class PkuReport(common.SkipReport):
  """SkipReport plus notes on samples that were kept but repaired or odd
  (swapped start/end, overlapping or clipped segments, duplicate files)."""

  notes: list = dataclasses.field(default_factory=list)

  def note(self, sample, text):
    self.notes.append({'sample': str(sample), 'note': str(text)})


class Builder(tfds.core.GeneratorBasedBuilder):
  """PKU-MMD phase 1 skeletons with per-frame and segment labels."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  # Phase 2 (`*_v2.txt`) is not offered: its naming, class set and split
  # files are unverified here (see README.md).
  BUILDER_CONFIGS = [
    PkuConfig(
      name='v1_xsub',
      protocol='cross_subject',
      description='Cross-subject split (cross-subject.txt).',
    ),
    PkuConfig(
      name='v1_xview',
      protocol='cross_view',
      description='Cross-view split (cross-view.txt).',
    ),
  ]
  DEFAULT_CONFIG_NAME = 'v1_xsub'

  def __init__(
    self,
    *,
    strict=False,
    num_workers=None,
    skeleton_dir=None,
    label_dir=None,
    **kwargs,
  ):
    """Builder options beyond TFDS's own kwargs.

    Args:
      strict: Raise ``RawFormatError`` on the first bad file instead of
        skipping it and recording it in ``skipped_<split>.json``.
      num_workers: Conversion processes (``None``: CPU count, max 8; 0: none).
      skeleton_dir: Folder of the skeleton files (absolute or relative to
        manual_dir) when the name-based search does not fit.
      label_dir: Same for the label files.
      **kwargs: Passed to ``tfds.core.GeneratorBasedBuilder``.
    """
    self._strict = bool(strict)
    self._num_workers = None if num_workers is None else int(num_workers)
    self._skeleton_dir = skeleton_dir
    self._label_dir = label_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=_DESCRIPTION,
      features=tfds.features.FeaturesDict(
        {
          'skeleton': tfds.features.Tensor(
            shape=(None, raw_files.NUM_PERSONS, raw_files.NUM_JOINTS, 3),
            dtype=np.float32,
          ),
          'labels': tfds.features.Tensor(shape=(None,), dtype=np.int32),
          'segments': tfds.features.Tensor(shape=(None, 4), dtype=np.int32),
          'num_frames': np.int32,
          'sequence_id': tfds.features.Text(),
          'view': tfds.features.Text(),
        }
      ),
      supervised_keys=None,
      homepage='https://www.icst.pku.edu.cn/struct/Projects/PKUMMD.html',
      metadata=tfds.core.MetadataDict(
        class_names=raw_files.class_names() + ['background'],
        background_label=raw_files.BACKGROUND,
        fps=30,
        frame_convention=raw_files.FRAME_CONVENTION,
        segments_columns=['label (1..51)', 'start', 'end', 'confidence'],
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = str(dl_manager.manual_dir)
    protocol = self.builder_config.protocol
    split_file = raw_files.find_split_file(manual_dir, protocol)
    listed = raw_files.parse_split_file(split_file)
    skeletons, labels, duplicates = raw_files.index_raw_files(
      manual_dir, self._skeleton_dir, self._label_dir
    )
    logging.info(
      'pku_mmd/%s: split file %s, %d skeleton and %d label files',
      self.builder_config.name,
      split_file,
      len(skeletons),
      len(labels),
    )
    generators = {}
    for split, entries in listed.items():
      items = [
        raw_files.VideoItem(
          video_id=vid,
          skeleton_path=skeletons.get(vid),
          label_path=labels.get(vid),
          split_file=split_file,
          split_line=line,
          manual_dir=manual_dir,
          strict=self._strict,
        )
        for vid, line in entries
      ]
      report = PkuReport(
        dataset=f'{self.name}/{self.builder_config.name}', split=split
      )
      report.note('*', f'split file {split_file}')
      ids = {vid for vid, _ in entries}
      for (kind, vid), paths in sorted(duplicates.items()):
        if vid in ids:
          report.note(vid, f'{len(paths)} {kind} files {paths}; used the first')
      generators[split] = self._generate_examples(split, items, report)
    return generators

  def _generate_examples(self, split, items, report):
    converted = common.convert_parallel(
      raw_files.convert_video,
      items,
      strict=self._strict,
      report=report,
      num_workers=self._num_workers,
      desc=f'pku_mmd {split}',
    )
    for item, example in converted:
      for text in example.pop('notes'):
        report.note(item, text)
      yield item.video_id, example
    # While TFDS generates, data_path is its temporary folder, which is
    # renamed to the final dataset folder once every split is written.
    path = report.write(self.data_path)
    logging.info('%s (report: %s)', report.summary(), path)
