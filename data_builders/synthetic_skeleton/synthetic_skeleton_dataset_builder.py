"""TFDS builder for the synthetic skeleton action-localization benchmark."""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from data_builders.synthetic_skeleton import motions
from skel_jax import graph

_DESCRIPTION = """\
Procedurally generated untrimmed skeleton sequences for self-supervised
pretraining and temporal action localization. Each sequence shows one subject
in the NTU RGB+D 25-joint Kinect v2 layout (metres, camera frame) alternating
idle background with action segments of {num} classes ({names}). Labels are
per frame; the background label is the last index ({bg}).

Splits: `pretrain` (for self-supervised pretraining; labels are stored but the
pretraining pipeline never reads them), `train` (labelled) and `val`.
Generation is deterministic: example i of split s uses
`np.random.default_rng([seed, s, i])`.
""".format(
  num=motions.NUM_CLASSES,
  names=', '.join(motions.CLASS_NAMES),
  bg=motions.BACKGROUND,
)

# Distinct RNG stream per split, independent of the order splits are built in.
_SPLIT_INDEX = {'pretrain': 0, 'train': 1, 'val': 2}


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """Sizes and seed of one synthetic benchmark variant.

  Attributes:
    num_pretrain: Number of sequences in the `pretrain` split.
    num_train: Number of sequences in the `train` split.
    num_val: Number of sequences in the `val` split.
    min_frames: Shortest sequence length (inclusive).
    max_frames: Longest sequence length (inclusive).
    seed: Root seed of every example's RNG.
  """

  num_pretrain: int = 800
  num_train: int = 200
  num_val: int = 100
  min_frames: int = 200
  max_frames: int = 320
  seed: int = 0

  def sequence_spec(self) -> motions.SequenceSpec:
    return motions.SequenceSpec(
      min_frames=self.min_frames, max_frames=self.max_frames
    )


class Builder(tfds.core.GeneratorBasedBuilder):
  """Synthetic NTU-25 skeleton temporal action localization dataset."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
    SyntheticConfig(
      name='default',
      description='800/200/100 sequences of 200-320 frames.',
      num_pretrain=800,
      num_train=200,
      num_val=100,
      min_frames=200,
      max_frames=320,
      seed=0,
    ),
    SyntheticConfig(
      name='smoke',
      description='Tiny variant for tests and smoke runs.',
      num_pretrain=64,
      num_train=32,
      num_val=16,
      min_frames=64,
      max_frames=128,
      seed=0,
    ),
  ]
  DEFAULT_CONFIG_NAME = 'default'

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=_DESCRIPTION,
      features=tfds.features.FeaturesDict(
        {
          'skeleton': tfds.features.Tensor(
            shape=(None, 1, graph.NUM_JOINTS, 3), dtype=np.float32
          ),
          'labels': tfds.features.Tensor(shape=(None,), dtype=np.int32),
          'num_frames': np.int32,
          'sequence_id': tfds.features.Text(),
        }
      ),
      supervised_keys=None,
      # Generated locally by this package: there is nothing to download.
      homepage='local: skel_jax data_builders/synthetic_skeleton',
      metadata=tfds.core.MetadataDict(
        class_names=list(motions.CLASS_NAMES) + ['background'],
        background_label=motions.BACKGROUND,
        fps=motions.SequenceSpec().fps,
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    sizes = {
      'pretrain': cfg.num_pretrain,
      'train': cfg.num_train,
      'val': cfg.num_val,
    }
    return {name: self._generate_examples(name, n) for name, n in sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    cfg = self.builder_config
    spec = cfg.sequence_spec()
    split_index = _SPLIT_INDEX[split]
    for i in range(num_examples):
      # Seeding per example makes every example independent of build order.
      rng = np.random.default_rng([cfg.seed, split_index, i])
      skeleton, labels = motions.generate_sequence(rng, spec)
      key = f'{split}_{i:05d}'
      yield (
        key,
        {
          'skeleton': skeleton,
          'labels': labels,
          'num_frames': np.int32(labels.shape[0]),
          'sequence_id': key,
        },
      )
