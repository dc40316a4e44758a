"""Shared plumbing for the raw-file dataset builders (NTU RGB+D, PKU-MMD, BABEL).

- ``RawFormatError``: a parse error that names the file, the line and what was
  expected. Strict builds raise it; lenient builds (the default) record it in a
  ``SkipReport`` written next to the dataset and skip the sample.
- ``convert_parallel``: runs a per-file conversion function in worker processes
  with a progress bar, preserving input order (so builds are deterministic).
"""

import concurrent.futures as futures
import dataclasses
import json
import multiprocessing
import os
import time

from tqdm import tqdm


class RawFormatError(ValueError):
  """A raw file does not follow its documented format."""

  def __init__(self, path, line, expected, found=None):
    self.path, self.line, self.expected, self.found = (
      path,
      line,
      expected,
      found,
    )
    where = f'{path}:{line}' if line is not None else str(path)
    msg = f'{where}: expected {expected}'
    if found is not None:
      msg += f', found {found!r}'
    super().__init__(msg)

  def __reduce__(self):
    # Rebuild from the fields so errors survive the trip back from workers.
    return (type(self), (self.path, self.line, self.expected, self.found))


@dataclasses.dataclass
class SkipReport:
  """Samples left out of a lenient build, with the reason for each."""

  dataset: str
  split: str
  skipped: list = dataclasses.field(default_factory=list)
  converted: int = 0
  seconds: float = 0.0

  def add(self, sample, reason):
    self.skipped.append({'sample': str(sample), 'reason': str(reason)})

  def write(self, directory):
    """Writes ``skipped_<split>.json`` (directory = the dataset's data dir)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f'skipped_{self.split}.json')
    with open(path, 'w') as f:
      json.dump(dataclasses.asdict(self), f, indent=2)
    return path

  def summary(self):
    rate = self.converted / self.seconds if self.seconds else float('nan')
    return (
      f'[{self.dataset}/{self.split}] converted {self.converted}, '
      f'skipped {len(self.skipped)} in {self.seconds:.1f}s '
      f'({rate:.1f} files/s)'
    )


def _safe_call(fn, item):
  try:
    return item, fn(item), None
  except RawFormatError as e:
    return item, None, e


def convert_parallel(
  fn, items, *, strict, report, num_workers=None, desc='convert'
):
  """Yields ``(item, result)`` for every item ``fn`` converts, in input order.

  ``fn`` must be a picklable top-level function raising ``RawFormatError`` on
  bad input. Strict mode re-raises the first error; lenient mode records it in
  ``report`` and goes on. ``num_workers=0`` runs in-process (tests, debugging).
  """
  items = list(items)
  t0 = time.time()
  num_workers = (
    min(os.cpu_count() or 1, 8) if num_workers is None else num_workers
  )
  if num_workers <= 1 or len(items) < 4:
    results = (_safe_call(fn, it) for it in items)
    pool = None
  else:
    ctx = multiprocessing.get_context('spawn')
    pool = futures.ProcessPoolExecutor(num_workers, mp_context=ctx)
    results = pool.map(_safe_call, [fn] * len(items), items, chunksize=8)
  try:
    for item, result, err in tqdm(
      results, total=len(items), desc=desc, mininterval=2.0, dynamic_ncols=True
    ):
      if err is not None:
        if strict:
          raise err
        report.add(item, err)
        continue
      if result is None:  # the converter chose to skip (reason already noted)
        continue
      report.converted += 1
      yield item, result
  finally:
    report.seconds = time.time() - t0
    if pool is not None:
      pool.shutdown(cancel_futures=True)


# ---------------------------------------------------------------------------
# Split checks every build gets (installed by ``skel_jax.datasets.build``).
# ---------------------------------------------------------------------------
class EmptySplitError(ValueError):
  """A split with no valid example (TFDS would only say "No examples")."""


class DuplicateSequenceError(ValueError):
  """The same sequence id in two splits (train/test leakage)."""


def _sequence_id(key, example):
  for name in ('sequence_id', 'sample_name'):
    if name in example:
      sid = example[name]
      return sid.decode() if isinstance(sid, bytes) else str(sid)
  return str(key)


def _num_frames(example):
  if 'num_frames' in example:
    return int(example['num_frames'])
  for name in ('labels', 'skeleton'):
    if name in example:
      return len(example[name])
  return None


class SplitTracker:
  """Wraps a builder's split generators, in order.

  Records per-split statistics in the dataset's metadata
  (``split_stats[split] = {num_examples, max_frames, longest}``, which
  training checks ``data.pad_length`` against), and raises for an empty
  split (with the skip reasons) and for a sequence id in two splits.
  """

  def __init__(self, builder):
    self.builder = builder
    self.name = f'{builder.name}/{builder.builder_config.name}'
    self.final_dir = os.fspath(builder.data_dir)
    self.split_of = {}

  def wrap(self, split, examples):
    count, longest, longest_id = 0, -1, None
    for key, example in examples:
      sid = _sequence_id(key, example)
      other = self.split_of.setdefault(sid, split)
      if other != split:
        raise DuplicateSequenceError(
          f'{self.name}: sequence {sid!r} is in both the {other!r} and the '
          f'{split!r} split; a sequence may be in one split only (check the '
          'split definition of the raw files)'
        )
      frames = _num_frames(example)
      if frames is not None and frames > longest:
        longest, longest_id = frames, sid
      count += 1
      yield key, example
    if not count:
      raise EmptySplitError(self._empty_message(split))
    metadata = self.builder.info.metadata
    if metadata is not None:
      stats = dict(metadata.get('split_stats') or {})
      stats[split] = {
        'num_examples': count,
        'max_frames': longest,
        'longest': longest_id,
      }
      metadata['split_stats'] = stats

  def _empty_message(self, split):
    msg = f'{self.name}: split {split!r} has no valid example'
    path = os.path.join(
      os.fspath(self.builder.data_path), f'skipped_{split}.json'
    )
    if not os.path.exists(path):
      return msg + ' (no skip report was written)'
    with open(path) as f:
      report = json.load(f)
    skipped = report.get('skipped', [])
    # The build folder is removed on failure: keep the report beside it.
    os.makedirs(os.path.dirname(self.final_dir), exist_ok=True)
    kept = os.path.join(
      os.path.dirname(self.final_dir), f'skipped_{split}.json'
    )
    with open(kept, 'w') as f:
      json.dump(report, f, indent=2)
    reasons = '; '.join(f'{s["sample"]}: {s["reason"]}' for s in skipped[:5])
    more = f' (and {len(skipped) - 5} more)' if len(skipped) > 5 else ''
    return (
      f'{msg}: all {len(skipped)} samples were skipped: {reasons}'
      f'{more}. Full report: {kept}'
    )
