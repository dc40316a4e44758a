"""Optional TensorBoard scalar/text logging through tensorboardX.

tensorboardX writes event files without TensorFlow. It is an optional
dependency: without it ``ScalarWriter`` warns once and does nothing, so
training never fails for want of a logger.
"""

import atexit
import itertools
import numbers
import os
import warnings
import weakref

try:
  from tensorboardX import SummaryWriter as _SummaryWriter
except ImportError:  # optional dependency
  _SummaryWriter = None

_warned = False
_file_ids = itertools.count()
# tensorboardX writes from a daemon thread and never flushes at exit; close
# whatever is still open so the last records of a run are not lost.
_open_writers = weakref.WeakSet()


@atexit.register
def _close_open_writers():
  for writer in list(_open_writers):
    writer.close()


def _warn_unavailable():
  global _warned
  if not _warned:
    _warned = True
    warnings.warn(
      'tensorboardX is not installed; TensorBoard logging is '
      'disabled (pip install tensorboardX).',
      stacklevel=3,
    )


def available() -> bool:
  """Whether event files will actually be written."""
  return _SummaryWriter is not None


class ScalarWriter:
  """Writes scalars (and markdown text) to a TensorBoard event file.

  Usage::

    with ScalarWriter(os.path.join(workdir, 'tb')) as tb:
      tb.scalars(step, {'loss': 0.3, 'lr': 0.1})
  """

  def __init__(self, logdir: str, purge_step: int | None = None):
    """Creates the writer.

    Args:
      logdir: directory for the event files (created on first write).
      purge_step: when resuming at this step, TensorBoard hides the events a
        crashed run logged at steps >= it.
    """
    self.logdir = logdir
    self._purge_step = purge_step
    self._writer = None
    self._closed = False
    if _SummaryWriter is None:
      _warn_unavailable()
      self._closed = True
    else:
      _open_writers.add(self)

  def _get(self):
    """The open SummaryWriter, (re)opened lazily after ``flush``."""
    if self._writer is None and not self._closed:
      os.makedirs(self.logdir, exist_ok=True)
      # File names only carry the second and host: without a unique suffix a
      # second writer opened in the same second would truncate the first.
      suffix = f'.{os.getpid()}.{next(_file_ids):06d}'
      # flush_secs bounds how stale a live TensorBoard view can get.
      self._writer = _SummaryWriter(
        logdir=self.logdir,
        flush_secs=30,
        max_queue=100,
        purge_step=self._purge_step,
        filename_suffix=suffix,
      )
      self._purge_step = None  # only the first file purges
    return self._writer

  @property
  def enabled(self) -> bool:
    """False without tensorboardX or after ``close``."""
    return not self._closed

  def scalars(self, step: int, values: dict) -> None:
    """Logs every real-number entry of ``values`` under its key as tag.

    Non-numeric entries (strings, lists, None) are skipped so that a whole
    metrics record can be passed as is; numpy/JAX scalars are accepted.
    """
    if self._closed:
      return
    writer = self._get()
    step = int(step)
    for tag, value in values.items():
      if isinstance(value, bool) or value is None:
        continue
      if not isinstance(value, numbers.Real):
        # Host numpy scalars / 0-d arrays; anything else is not a scalar.
        try:
          if getattr(value, 'ndim', None) != 0:
            continue
          value = float(value)
        except (TypeError, ValueError):
          continue
      # NaN/inf are logged too: they are what flags a diverging run.
      writer.add_scalar(str(tag), float(value), global_step=step)

  def text(self, step: int, tag: str, markdown: str) -> None:
    """Logs a markdown string (e.g. a results table) under ``tag``."""
    if self._closed:
      return
    self._get().add_text(str(tag), str(markdown), global_step=int(step))

  def flush(self) -> None:
    """Writes everything logged so far to disk.

    tensorboardX's own ``flush`` does not wait for its writer thread, so
    this closes the current event file instead; the next write opens a new
    one. Call it at milestones (end of a stage), not every step: between
    flushes records reach the disk within 30 s anyway.
    """
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def close(self) -> None:
    self.flush()
    self._closed = True
    _open_writers.discard(self)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False
