"""The datasets skel_jax knows and how they are built (no TensorFlow).

``REGISTRY`` names each dataset's builder package (a standard TFDS
``GeneratorBasedBuilder``); ``make_builder`` instantiates one with only the
options it accepts and ``build`` writes it as array_record. Raw-file
builders accept ``strict`` (raise on the first bad file, naming file and
line) and ``num_workers`` (parallel conversion).

Every build records its inputs (``build_inputs.json``: each file under
manual_dir with size and mtime, and the builder options); an existing dataset
is reused only when the inputs match (``overwrite`` rebuilds it). Leftover
``incomplete.*`` folders of killed builds are removed first. Each split must
hold at least one example and no sequence id may be in two splits.

``skel_jax.build_data`` is the command line over this module; training
(``input_pipeline``) and config validation use it directly.
"""

import importlib
import inspect
import json
import os
import shutil
import time

import tensorflow_datasets as tfds

# dataset name -> module holding its ``Builder`` class.
REGISTRY = {
  'synthetic_skeleton': 'data_builders.synthetic_skeleton.synthetic_skeleton_dataset_builder',
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
    raise ValueError(
      f'dataset {name}: unknown config {config!r}; expected one of {known}'
    )
  accepted = inspect.signature(cls.__init__).parameters
  takes_any = any(
    p.kind == p.VAR_KEYWORD for p in accepted.values() if p.name != 'kwargs'
  )
  unknown = [k for k in builder_kwargs if k not in accepted and not takes_any]
  if unknown:
    raise ValueError(f'dataset {name} does not take options {unknown}')
  builder = cls(config=config, data_dir=data_dir, **builder_kwargs)
  builder.skel_jax_options = dict(builder_kwargs)  # part of the fingerprint
  return builder


INPUTS_FILE = 'build_inputs.json'
# Options that change how a build runs, not what it contains.
_RUN_OPTIONS = ('num_workers', 'strict')


class InputsChangedError(ValueError):
  """The dataset on disk was built from other raw files or options."""


def _stat(path):
  st = os.stat(path)
  return [st.st_size, st.st_mtime_ns]


def input_fingerprint(builder, manual_dir):
  """What a build reads: every file under ``manual_dir`` (relative path ->
  [size, mtime_ns]) and the builder options (files they name are stat-ed)."""
  files = {}
  if manual_dir:
    for root, dirs, names in os.walk(manual_dir, followlinks=True):
      dirs.sort()
      for name in sorted(names):
        path = os.path.join(root, name)
        files[os.path.relpath(path, manual_dir)] = _stat(path)
  options = {}
  for key, value in sorted(getattr(builder, 'skel_jax_options', {}).items()):
    if key in _RUN_OPTIONS:
      continue
    options[key] = value
    if isinstance(value, str) and os.path.isfile(value):
      options[key] = {'path': value, 'stat': _stat(value)}
  return {
    'dataset': f'{builder.name}/{builder.builder_config.name}',
    'version': str(builder.version),
    'manual_dir': os.path.abspath(manual_dir) if manual_dir else None,
    'options': options,
    'files': files,
  }


def _examples(items, n=3):
  items = sorted(items)
  more = f', ... ({len(items)} in all)' if len(items) > n else ''
  return ', '.join(items[:n]) + more


def inputs_difference(old, new):
  """One line saying how two fingerprints differ ('' when they match).
  The manual_dir path alone does not count: moved files are the same input."""
  parts = []
  if old.get('options') != new.get('options'):
    parts.append(
      f'builder options {old.get("options")} -> {new.get("options")}'
    )
  a, b = old.get('files', {}), new.get('files', {})
  added, removed = set(b) - set(a), set(a) - set(b)
  changed = {k for k in set(a) & set(b) if a[k] != b[k]}
  if added:
    parts.append(f'{len(added)} file(s) added ({_examples(added)})')
  if removed:
    parts.append(f'{len(removed)} file(s) removed ({_examples(removed)})')
  if changed:
    parts.append(
      f'{len(changed)} file(s) changed size or time ({_examples(changed)})'
    )
  if parts and old.get('manual_dir') != new.get('manual_dir'):
    parts.insert(
      0, f'manual_dir {old.get("manual_dir")} -> {new.get("manual_dir")}'
    )
  return '; '.join(parts)


def remove_incomplete(builder):
  """Deletes TFDS temporary folders of killed builds (``incomplete.*``)."""
  parent = os.path.dirname(os.fspath(builder.data_dir))
  if not os.path.isdir(parent):
    return []
  removed = []
  for name in sorted(os.listdir(parent)):
    if name.startswith('incomplete.'):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
      removed.append(name)
  if removed:
    print(
      f'[build_data] removed leftovers of an interrupted build: '
      f'{", ".join(removed)}',
      flush=True,
    )
  return removed


def _track_splits(builder):
  """Routes the builder's split generators through ``common.SplitTracker``."""
  from data_builders import common  # pylint: disable=g-import-not-at-top

  tracker = common.SplitTracker(builder)
  original = builder._split_generators  # pylint: disable=protected-access

  def split_generators(dl_manager):
    generators = original(dl_manager)
    if not isinstance(generators, dict):
      return generators
    return {
      split: tracker.wrap(split, gen) for split, gen in generators.items()
    }

  builder._split_generators = split_generators  # pylint: disable=protected-access


def build(builder, manual_dir=None, overwrite=False):
  """download_and_prepare as array_record; prints examples per split and time.

  Reuses an existing dataset only when it was built from the same inputs
  (``input_fingerprint``); ``overwrite`` rebuilds it.
  """
  t0 = time.time()
  remove_incomplete(builder)
  inputs = input_fingerprint(builder, manual_dir)
  data_dir = os.fspath(builder.data_dir)
  exists = os.path.exists(os.path.join(data_dir, 'dataset_info.json'))
  if exists and overwrite:
    print(f'[build_data] --overwrite: rebuilding {data_dir}', flush=True)
    shutil.rmtree(data_dir)
    # A builder that read the old dataset's info cannot regenerate it.
    root = os.path.dirname(os.path.dirname(os.path.dirname(data_dir)))
    builder = make_builder(
      builder.name,
      builder.builder_config.name,
      root,
      **getattr(builder, 'skel_jax_options', {}),
    )
  elif exists:
    recorded = os.path.join(data_dir, INPUTS_FILE)
    if not os.path.exists(recorded):
      print(
        f'[build_data] note: {data_dir} has no record of its inputs '
        '(built before fingerprints); reusing it. Pass --overwrite to '
        'rebuild.',
        flush=True,
      )
    elif manual_dir or not builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
      with open(recorded) as f:
        diff = inputs_difference(json.load(f), inputs)
      if diff:
        raise InputsChangedError(
          f'{data_dir} was built from other inputs: {diff}. Pass '
          '--overwrite to rebuild it from these, or use another '
          '--data_dir.'
        )
  _track_splits(builder)
  dl = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(file_format='array_record', download_config=dl)
  if not exists or overwrite:
    with open(os.path.join(data_dir, INPUTS_FILE), 'w') as f:
      json.dump(inputs, f)
  secs = time.time() - t0
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(
    f'[build_data] {builder.name}/{builder.builder_config.name}: {splits} '
    f'in {secs:.1f}s -> {builder.data_dir}',
    flush=True,
  )
  for split in splits:
    path = os.path.join(builder.data_dir, f'skipped_{split}.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      report = json.load(f)
    skipped, secs = report['skipped'], report.get('seconds', 0.0)
    rate = f'{report["converted"] / secs:.1f} files/s' if secs else '-'
    print(
      f'[build_data]   {split}: converted {report.get("converted")} '
      f'({rate}), skipped {len(skipped)}; reasons in {path}',
      flush=True,
    )
    for item in skipped[:5]:
      print(
        f'[build_data]     skipped {item["sample"]}: {item["reason"]}',
        flush=True,
      )
    if len(skipped) > 5:
      print(f'[build_data]     ... and {len(skipped) - 5} more', flush=True)
  return builder


def dataset_listing():
  """NAME/CONFIG of every registered builder, for ``--help``."""
  lines = ['Datasets (--dataset=NAME/CONFIG):']
  for name in sorted(REGISTRY):
    try:
      configs = [c.name for c in builder_class(name).BUILDER_CONFIGS]
    except Exception as e:  # pylint: disable=broad-except
      configs = [f'(cannot be loaded: {e})']
    lines.append(f'  {name}: {", ".join(configs)}')
  return '\n'.join(lines) + '\n'
