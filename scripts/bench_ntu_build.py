r"""Throughput of the NTU RGB+D builder on a realistic synthetic raw tree.

  .venv/bin/python scripts/bench_ntu_build.py [--num_files=2000] \
      [--num_workers=N] [--keep_dir=/tmp/ntu_bench]

Writes ``num_files`` valid ``.skeleton`` files (~100 frames, 1 body, 2 for the
mutual actions; tests/fixtures_ntu.py) to a temporary directory, then times a
full ``ntu60_xsub`` build (parse in worker processes + TFDS array_record
writing + shuffling) and prints files/s. ``--num_workers`` defaults to the
builder default (CPU count, at most 8).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_REPO, 'tests'))  # fixtures_ntu
sys.path.insert(0, _REPO)

import fixtures_ntu  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_files', type=int, default=2000)
  parser.add_argument('--num_workers', type=int, default=None)
  parser.add_argument(
    '--keep_dir',
    default=None,
    help='Write here and keep it (default: a temp dir).',
  )
  args = parser.parse_args()
  # Imported here, not at the top: spawned conversion workers re-import this
  # module and should not pay for TensorFlow Datasets.
  from skel_jax import datasets  # pylint: disable=g-import-not-at-top

  root = args.keep_dir or tempfile.mkdtemp(prefix='ntu_bench_')
  raw = os.path.join(root, 'raw')
  try:
    t0 = time.time()
    paths = fixtures_ntu.write_realistic_tree(raw, args.num_files)
    size = sum(os.path.getsize(p) for p in paths)
    print(
      f'[bench] wrote {len(paths)} files ({size / 2**20:.0f} MiB) in '
      f'{time.time() - t0:.1f}s',
      flush=True,
    )

    data_dir = os.path.join(root, 'tfds')
    shutil.rmtree(data_dir, ignore_errors=True)
    builder = datasets.make_builder(
      'ntu_rgbd', 'ntu60_xsub', data_dir, num_workers=args.num_workers
    )
    t0 = time.time()
    datasets.build(builder, raw)
    secs = time.time() - t0
    examples = sum(s.num_examples for s in builder.info.splits.values())
    workers = (
      f'default (min(cpu_count, 8) = {min(os.cpu_count() or 1, 8)})'
      if args.num_workers is None
      else args.num_workers
    )
    print(
      f'[bench] built {examples} examples in {secs:.1f}s: '
      f'{examples / secs:.1f} files/s, {size / 2**20 / secs:.1f} MiB/s '
      f'(num_workers={workers}, {os.cpu_count()} CPUs)',
      flush=True,
    )
  finally:
    if not args.keep_dir:
      shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  main()
