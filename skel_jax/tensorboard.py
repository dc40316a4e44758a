"""Optional TensorBoard logging through tensorboardX.

tensorboardX writes event files without TensorFlow. It is an optional
dependency: without it ``ScalarWriter`` warns once and does nothing, so
training never fails for want of a logger.

What a run's ``WORKDIR/tb`` holds:

- training scalars at every log step (``MetricLog``): the losses, ``lr``,
  ``epoch``, ``time_s`` and the pretraining diagnostics ``diag/...``;
- at every evaluation (``log_evaluation``, step = training steps done):
  ``eval/mAP_iou_<IoU>`` per threshold (e.g. ``eval/mAP_iou_0.5``: '@' is
  not allowed in tags), ``eval/mAP_mean``,
  ``eval/frame_accuracy``, ``eval/AP_class/<class name>`` (AP averaged over
  the thresholds), the images ``eval/timelines`` and ``eval/confusion``, the
  text ``eval/results`` (the console table);
- after pretraining, the frozen-feature probe as ``probe/<name>``;
- the run's hyperparameters (the flattened config) in the HParams
  dashboard, with ``eval/mAP_mean`` and ``eval/frame_accuracy`` (or the probe
  scores) as its metrics.
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

  def image(self, step: int, tag: str, image) -> None:
    """Logs an image: a PNG/GIF path (first frame) or an (H, W, 3|4) uint8
    array."""
    if self._closed:
      return
    import numpy as np  # pylint: disable=g-import-not-at-top

    if isinstance(image, (str, os.PathLike)):
      from PIL import Image  # pylint: disable=g-import-not-at-top

      with Image.open(image) as im:
        image = np.asarray(im.convert('RGB'))
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
      raise ValueError(
        f'{tag}: expected an (H, W, 3|4) image, got {image.shape}'
      )
    self._get().add_image(
      str(tag), image, global_step=int(step), dataformats='HWC'
    )

  def hparams(self, hparams: dict, metric_tags=()) -> None:
    """Records the run's hyperparameters for TensorBoard's HParams dashboard.

    Args:
      hparams: flat {name: bool | int | float | str} (``flatten_config``).
      metric_tags: scalar tags (logged by ``scalars``, in this logdir) the
        dashboard shows next to the hyperparameters.
    """
    if self._closed:
      return
    from tensorboardX.summary import hparams as hparams_summary  # pylint: disable=g-import-not-at-top

    writer = self._get()
    exp, ssi, sei = hparams_summary(
      dict(hparams), {str(t): 0.0 for t in metric_tags}
    )
    for summary in (exp, ssi, sei):
      writer.file_writer.add_summary(summary)

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


def flatten_config(config, prefix='') -> dict:
  """{dotted key: value} of a (nested) ConfigDict/dict, values made
  TensorBoard-HParams types: bool/int/float/str stay, None becomes 'None',
  sequences and anything else their ``str``."""
  out = {}
  items = config.items() if hasattr(config, 'items') else []
  for key, value in items:
    name = f'{prefix}{key}'
    if hasattr(value, 'items'):
      out.update(flatten_config(value, name + '.'))
    elif isinstance(value, (bool, int, float, str)):
      out[name] = value
    else:
      out[name] = str(value)
  return out


def eval_scalars(result, class_names=None) -> dict:
  """TensorBoard tags of an evaluation result (``finetune.evaluate_predictions``
  / ``metrics.compute_map`` layout): mAP per IoU and mean, frame accuracy,
  per-class AP (mean over the IoU thresholds)."""
  out = {
    f'eval/mAP_iou_{float(theta):g}': float(v)
    for theta, v in result.get('iou', {}).items()
  }
  if 'mean' in result:
    out['eval/mAP_mean'] = float(result['mean'])
  if 'frame_accuracy' in result:
    out['eval/frame_accuracy'] = float(result['frame_accuracy'])
  for label, aps in result.get('per_class', {}).items():
    name = str(label)
    try:
      name = str(class_names[int(label)])
    except (TypeError, ValueError, IndexError):
      pass
    if aps:
      out[f'eval/AP_class/{name}'] = float(
        sum(float(v) for v in aps.values()) / len(aps)
      )
  return out


EVAL_HPARAM_METRICS = ('eval/mAP_mean', 'eval/frame_accuracy')


def log_evaluation(
  workdir, step, result, class_names=None, images=None, config=None, text=None
) -> None:
  """Writes one evaluation to ``WORKDIR/tb`` (tags in the module docstring):
  its scalars, ``images`` ({tag: PNG path or array}; missing files are
  skipped), ``text`` (markdown, as ``eval/results``) and, with ``config``,
  the run's hyperparameters."""
  with ScalarWriter(os.path.join(workdir, 'tb')) as tb:
    tb.scalars(step, eval_scalars(result, class_names))
    for tag, image in (images or {}).items():
      if isinstance(image, (str, os.PathLike)) and not os.path.exists(image):
        continue
      tb.image(step, tag, image)
    if text:
      tb.text(step, 'eval/results', text)
    if config is not None:
      tb.hparams(flatten_config(config), EVAL_HPARAM_METRICS)
