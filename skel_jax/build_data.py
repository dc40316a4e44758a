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

Every build records its inputs (``build_inputs.json``: each file under
manual_dir with size and mtime, and the builder options); an existing dataset
is reused only when the inputs match (``--overwrite`` rebuilds it). Leftover
``incomplete.*`` folders of killed builds are removed first. Each split must
hold at least one example and no sequence id may be in two splits.
"""

import sys

from absl import app
from absl import flags

from skel_jax import datasets


def define_flags():
  """The CLI flags; defined only when run as a script, so importing this module
  never clashes with ``main``'s ``--data_dir`` (the library, which training
  uses, is ``skel_jax.datasets``)."""
  flags.DEFINE_string(
    'dataset',
    'synthetic_skeleton/default',
    'NAME/CONFIG of the dataset to build (the list: --help).',
  )
  flags.DEFINE_string(
    'data_dir',
    'data',
    'TFDS data directory (output; main and study read it with --data_dir).',
  )
  flags.DEFINE_string(
    'manual_dir', None, 'Folder with the raw downloaded files.'
  )
  flags.DEFINE_bool(
    'strict',
    False,
    'Fail on the first malformed raw file instead of '
    'skipping it and recording it in skipped_<split>.json.',
  )
  flags.DEFINE_integer(
    'num_workers', None, 'Conversion processes (default: CPU count, max 8).'
  )
  flags.DEFINE_multi_string(
    'builder_option', [], 'Builder-specific KEY=VALUE options.'
  )
  flags.DEFINE_bool(
    'overwrite',
    False,
    'Rebuild the dataset even if one built from other '
    'inputs (raw files, options) exists under --data_dir.',
  )


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
  from skel_jax import cli  # pylint: disable=g-import-not-at-top

  # TFDS logs every shard at INFO and draws nested bars: WARNING and one bar
  # per split unless --verbosity asks for more.
  cli.apply_verbosity()
  name, _, config = flags.FLAGS.dataset.partition('/')
  kwargs = _parse_options(flags.FLAGS.builder_option)
  if name != 'synthetic_skeleton':
    kwargs.update(
      strict=flags.FLAGS.strict, num_workers=flags.FLAGS.num_workers
    )
  from data_builders import common  # pylint: disable=g-import-not-at-top

  try:
    builder = datasets.make_builder(
      name, config or 'default', flags.FLAGS.data_dir, **kwargs
    )
    cli.quiet_tfds(builder)
    datasets.build(
      builder, flags.FLAGS.manual_dir, overwrite=flags.FLAGS.overwrite
    )
  except (
    datasets.InputsChangedError,
    common.EmptySplitError,
    common.DuplicateSequenceError,
  ) as e:
    print(f'build_data: error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  from skel_jax import cli  # pylint: disable=g-import-not-at-top

  define_flags()
  if cli.extend_help(only=False):
    __doc__ += '\n' + datasets.dataset_listing()  # pylint: disable=redefined-builtin
  app.run(main)
