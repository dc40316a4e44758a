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
    self.path, self.line, self.expected, self.found = path, line, expected, found
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
    return (f'[{self.dataset}/{self.split}] converted {self.converted}, '
            f'skipped {len(self.skipped)} in {self.seconds:.1f}s '
            f'({rate:.1f} files/s)')


def _safe_call(fn, item):
  try:
    return item, fn(item), None
  except RawFormatError as e:
    return item, None, e


def convert_parallel(fn, items, *, strict, report, num_workers=None,
                     desc='convert'):
  """Yields ``(item, result)`` for every item ``fn`` converts, in input order.

  ``fn`` must be a picklable top-level function raising ``RawFormatError`` on
  bad input. Strict mode re-raises the first error; lenient mode records it in
  ``report`` and goes on. ``num_workers=0`` runs in-process (tests, debugging).
  """
  items = list(items)
  t0 = time.time()
  num_workers = (min(os.cpu_count() or 1, 8) if num_workers is None
                 else num_workers)
  if num_workers <= 1 or len(items) < 4:
    results = (_safe_call(fn, it) for it in items)
    pool = None
  else:
    ctx = multiprocessing.get_context('spawn')
    pool = futures.ProcessPoolExecutor(num_workers, mp_context=ctx)
    results = pool.map(_safe_call, [fn] * len(items), items, chunksize=8)
  try:
    for item, result, err in tqdm(results, total=len(items), desc=desc,
                                  mininterval=2.0, dynamic_ncols=True):
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
