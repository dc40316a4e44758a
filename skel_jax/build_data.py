r"""Builds TFDS datasets (array_record, no TensorFlow) from our builder packages.

  python -m skel_jax.build_data --dataset=synthetic_skeleton/default --data_dir=data
  python -m skel_jax.build_data --dataset=ntu_rgbd/ntu60_xsub \
      --manual_dir=/data/nturgbd_raw --data_dir=data [--strict] [--num_workers=8]
  python -m skel_jax.build_data --dataset=babel/subset1 --manual_dir=/data/babel \
      --builder_option=smplh_model=/models/SMPLH_male.pkl

The ``tfds build`` CLI imports TensorFlow at start-up, so this is the entry
point; the builders themselves are standard ``GeneratorBasedBuilder``s.
Raw-file builders accept ``strict`` (raise on the first bad file, naming file
and line) and ``num_workers`` (parallel conversion); other builder-specific
options pass through ``--builder_option=key=value``.
"""
import importlib
import inspect
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

# dataset name -> module holding its ``Builder`` class.
REGISTRY = {
    'synthetic_skeleton':
        'data_builders.synthetic_skeleton.synthetic_skeleton_dataset_builder',
    'ntu_rgbd': 'data_builders.ntu_rgbd.ntu_rgbd_dataset_builder',
    'pku_mmd': 'data_builders.pku_mmd.pku_mmd_dataset_builder',
    'babel': 'data_builders.babel.babel_dataset_builder',
}


def builder_class(name):
  if name not in REGISTRY:
    raise ValueError(f'unknown dataset {name!r}; known: {sorted(REGISTRY)}')
  return importlib.import_module(REGISTRY[name]).Builder


def make_builder(name, config, data_dir, **builder_kwargs):
  """The builder ``name`` with config ``config``; extra kwargs go to its __init__
  (only those it accepts, e.g. ``strict``, ``num_workers``, ``smplh_model``)."""
  cls = builder_class(name)
  known = [c.name for c in cls.BUILDER_CONFIGS]
  if isinstance(config, str) and config not in known:
    raise ValueError(f'dataset {name}: unknown config {config!r}; '
                     f'expected one of {known}')
  accepted = inspect.signature(cls.__init__).parameters
  takes_any = any(p.kind == p.VAR_KEYWORD for p in accepted.values()
                  if p.name != 'kwargs')
  unknown = [k for k in builder_kwargs if k not in accepted and not takes_any]
  if unknown:
    raise ValueError(f'dataset {name} does not take options {unknown}')
  return cls(config=config, data_dir=data_dir, **builder_kwargs)


def build(builder, manual_dir=None):
  """download_and_prepare as array_record; prints examples per split and time."""
  t0 = time.time()
  dl = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(file_format='array_record', download_config=dl)
  secs = time.time() - t0
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f'[build_data] {builder.name}/{builder.builder_config.name}: {splits} '
        f'in {secs:.1f}s -> {builder.data_dir}', flush=True)
  for split in splits:
    path = os.path.join(builder.data_dir, f'skipped_{split}.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      report = json.load(f)
    skipped, secs = report['skipped'], report.get('seconds', 0.0)
    rate = f'{report["converted"] / secs:.1f} files/s' if secs else '-'
    print(f'[build_data]   {split}: converted {report.get("converted")} '
          f'({rate}), skipped {len(skipped)}; reasons in {path}', flush=True)
    for item in skipped[:5]:
      print(f'[build_data]     skipped {item["sample"]}: {item["reason"]}',
            flush=True)
    if len(skipped) > 5:
      print(f'[build_data]     ... and {len(skipped) - 5} more', flush=True)
  return builder


_DATASET = flags.DEFINE_string('dataset', 'synthetic_skeleton/default',
                               'NAME/CONFIG of the dataset to build.')
_DATA_DIR = flags.DEFINE_string('data_dir', 'data', 'TFDS data directory.')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None,
                                  'Folder with the raw downloaded files.')
_STRICT = flags.DEFINE_bool(
    'strict', False, 'Fail on the first malformed raw file instead of '
    'skipping it and recording it in skipped_<split>.json.')
_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', None, 'Conversion processes (default: CPU count, max 8).')
_OPTIONS = flags.DEFINE_multi_string(
    'builder_option', [], 'Builder-specific KEY=VALUE options.')


def _parse_options(raw):
  out = {}
  for item in raw:
    key, sep, value = item.partition('=')
    if not sep:
      raise app.UsageError(f'--builder_option={item!r}: expected KEY=VALUE')
    out[key] = value
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TFDS logs every shard at INFO
  name, _, config = _DATASET.value.partition('/')
  kwargs = _parse_options(_OPTIONS.value)
  if name != 'synthetic_skeleton':
    kwargs.update(strict=_STRICT.value, num_workers=_NUM_WORKERS.value)
  build(make_builder(name, config or 'default', _DATA_DIR.value, **kwargs),
        _MANUAL_DIR.value)


if __name__ == '__main__':
  app.run(main)
