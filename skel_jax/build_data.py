r"""Builds TFDS datasets (array_record, no TensorFlow) from our builder packages.

  python -m skel_jax.build_data --dataset=synthetic_skeleton/default --data_dir=data

The ``tfds build`` CLI imports TensorFlow at start-up, so this is the entry
point; the builders themselves are standard ``GeneratorBasedBuilder``s.
"""
import importlib
import time

from absl import app
from absl import flags
import tensorflow_datasets as tfds

# dataset name -> module holding its ``Builder`` class.
REGISTRY = {
    'synthetic_skeleton':
        'data_builders.synthetic_skeleton.synthetic_skeleton_dataset_builder',
}


def builder_class(name):
  if name not in REGISTRY:
    raise ValueError(f'unknown dataset {name!r}; known: {sorted(REGISTRY)}')
  return importlib.import_module(REGISTRY[name]).Builder


def make_builder(name, config, data_dir, manual_dir=None):
  cls = builder_class(name)
  known = [c.name for c in cls.BUILDER_CONFIGS]
  if isinstance(config, str) and config not in known:
    raise ValueError(f'dataset {name}: unknown config {config!r}; '
                     f'expected one of {known}')
  return cls(config=config, data_dir=data_dir)


def build(builder, manual_dir=None):
  """download_and_prepare as array_record; prints examples per split and time."""
  t0 = time.time()
  dl = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(file_format='array_record', download_config=dl)
  secs = time.time() - t0
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f'[build_data] {builder.name}/{builder.builder_config.name}: {splits} '
        f'in {secs:.1f}s -> {builder.data_dir}', flush=True)
  return builder


_DATASET = flags.DEFINE_string('dataset', 'synthetic_skeleton/default',
                               'NAME/CONFIG of the dataset to build.')
_DATA_DIR = flags.DEFINE_string('data_dir', 'data', 'TFDS data directory.')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None,
                                  'Folder with the raw downloaded files.')


def main(argv):
  del argv
  name, _, config = _DATASET.value.partition('/')
  build(make_builder(name, config or 'default', _DATA_DIR.value),
        _MANUAL_DIR.value)


if __name__ == '__main__':
  app.run(main)
