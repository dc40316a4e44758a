"""Frame probabilities -> temporal action segments (docs/method.md §5).

Conventions used throughout skel_jax:
  * A segment is ``(label, start, end)`` in frame units with ``end``
    EXCLUSIVE (half-open ``[start, end)``); predictions append a score:
    ``(label, start, end, score)``.
  * Labels are class indices; the background class never forms a segment.

Two decoders are provided (``DecodeConfig.method``):

``'outer_inner'`` (the method's decoder, from the LINE AAAI'23 release)
  For every class ``c`` and every threshold ``thr``: runs of
  ``probs[:, c] > thr`` (strict) of length ``>= min_length`` become proposals
  scored ``inner - outer_weight * outer``, where ``inner`` is the mean of
  ``probs[:, c]`` over the run and ``outer`` is the mean over the two outer
  margins (0 when both are empty). Proposals of all thresholds are pooled per
  class and reduced with greedy NMS using overlap / (length of the OTHER
  segment) > ``nms_threshold`` (the LINE rule, not IoU).

  Margin rounding (``line_quirks=False``, the default). For a run
  ``[s, e)`` of length ``L = e - s`` in a video of ``T`` frames and
  ``m = outer_ratio * L``, the margins are

      left  = [max(0, int(s - m)), s)
      right = [e, min(T, int(e + m)))

  with Python ``int()`` truncation of the boundary, as in the reference.
  Inside the video that is ``ceil(m)`` frames on the left and ``floor(m)``
  on the right: the same margin widths the reference uses (e.g. L = 5 gives
  2 and 1 frames).

  ``line_quirks=True`` reproduces the released arithmetic exactly for
  comparison with AAAI'23 numbers: ``inner`` also averages frame ``e`` (one
  past the run); the right margin is ``[e + 1, min(T - 1, int(e + m + 1)))``
  (it skips frame ``e`` and never reaches the last video frame); NMS measures
  the stored segment ``[s, e + 1]`` with ``+1`` inclusive arithmetic.
  Returned segments are still plain half-open runs ``[s, e)``; the ``'line'``
  metric in ``skel_jax.metrics`` re-applies the released frame offsets.
  The released code also skips videos whose video-level score is < 0.1; our
  model has no video-level head, so no such gate is applied.

``'jhang'`` (the JHang2020/Simple-Skeleton-Detection baseline,
  docs/data_and_eval.md §2.7(b))
  Mean filter: frame ``t`` averages frames ``[max(t - k, 0), min(t + k, T))``
  (``k = smooth_kernel``; the reference clips at ``T - 1`` of a
  9000-frame padded array, so clipping at the true ``T`` is the faithful
  reading for an unpadded video). Activity ``1 - p_background >=
  activity_threshold``; each contiguous run is one segment whose class is the
  argmax of the run-mean smoothed probabilities over non-background columns,
  scored by that mean. No minimum length and no NMS (runs are disjoint).
"""

import dataclasses

import numpy as np

Segment = tuple[int, int, int]
Prediction = tuple[int, int, int, float]


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Starts and exclusive ends of the True runs of a 1-D boolean mask."""
  padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
  edges = np.diff(padded.astype(np.int8))
  return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def labels_to_segments(labels: np.ndarray, background: int) -> list[Segment]:
  """Run-length encodes frame labels into ``(label, start, end)`` segments.

  Args:
    labels: (T,) integer frame labels.
    background: label value that never forms a segment.

  Returns:
    Runs of equal non-background labels in temporal order, ``end``
    exclusive.
  """
  labels = np.asarray(labels).reshape(-1)
  if labels.size == 0:
    return []
  change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
  starts = np.concatenate([[0], change])
  ends = np.concatenate([change, [labels.size]])
  values = labels[starts]
  keep = values != background
  return [
    (int(v), int(s), int(e))
    for v, s, e in zip(values[keep], starts[keep], ends[keep])
  ]


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """Post-processing settings; defaults are the released LINE/SnipCLR ones.

  Attributes:
    method: 'outer_inner' (docs/method.md §5) or 'jhang'
      (docs/data_and_eval.md §2.7(b)).
    thresholds: outer_inner: probability thresholds; runs are ``p > thr``.
    min_length: outer_inner: shortest kept run in frames.
    outer_ratio: outer_inner: margin width as a fraction of the run length.
    outer_weight: outer_inner: weight of the outer mean in the score.
    nms_threshold: outer_inner: suppress when overlap / other length > this.
    line_quirks: outer_inner: reproduce the released off-by-one arithmetic.
    smooth_kernel: jhang: half-width k of the temporal mean filter.
    activity_threshold: jhang: keep frames with ``1 - p_bg >=`` this.
  """

  thresholds: tuple[float, ...] = (0.03, 0.035, 0.04, 0.045, 0.05)
  min_length: int = 3
  outer_ratio: float = 0.25
  outer_weight: float = 0.6
  nms_threshold: float = 0.2
  method: str = 'outer_inner'
  line_quirks: bool = False
  smooth_kernel: int = 10
  activity_threshold: float = 0.4

  def __post_init__(self):
    if self.method not in ('outer_inner', 'jhang'):
      raise ValueError(f'Unknown decode method {self.method!r}.')


def nms(
  segments, threshold: float, line_quirks: bool = False
) -> list[Prediction]:
  """Greedy per-label NMS with the LINE overlap rule.

  Segments are visited by descending score (stable: ties keep input order);
  each kept segment removes every later segment of the SAME label whose
  overlap / (its own length) exceeds ``threshold``.

  Args:
    segments: iterable of ``(label, start, end, score)``, ``end`` exclusive.
    threshold: suppression threshold on overlap / own length.
    line_quirks: measure as the released code does: the stored end is
      ``end + 1`` and both overlap and length add 1 (inclusive arithmetic).

  Returns:
    Kept segments sorted by label, then by descending score.
  """
  seg = np.asarray(list(segments), dtype=np.float64).reshape(-1, 4)
  if seg.shape[0] == 0:
    return []
  labels = seg[:, 0].astype(np.int64)
  kept = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    idx = idx[np.argsort(-seg[idx, 3], kind='stable')]
    starts, ends = seg[idx, 1], seg[idx, 2]
    pad = 0.0
    if line_quirks:
      ends, pad = ends + 1.0, 1.0
    length = ends - starts + pad
    alive = np.ones(idx.size, bool)
    for i in range(idx.size):
      if not alive[i]:
        continue
      kept.append(idx[i])
      inter = np.maximum(
        0.0,
        np.minimum(ends[i], ends[i + 1 :])
        - np.maximum(starts[i], starts[i + 1 :])
        + pad,
      )
      # A zero-length segment has no overlap and is never suppressed.
      ratio = np.divide(
        inter,
        length[i + 1 :],
        out=np.zeros_like(inter),
        where=length[i + 1 :] > 0,
      )
      alive[i + 1 :] &= ratio <= threshold
  return [
    (int(seg[k, 0]), int(seg[k, 1]), int(seg[k, 2]), float(seg[k, 3]))
    for k in kept
  ]


def _outer_inner_class(
  p: np.ndarray, label: int, cfg: DecodeConfig
) -> list[Prediction]:
  """Pooled, NMS-reduced proposals of one class probability track (T,)."""
  num_frames = p.shape[0]
  # Cumulative sums make every interval mean O(1): sum[a, b) = cs[b] - cs[a].
  cs = np.concatenate([[0.0], np.cumsum(p, dtype=np.float64)])
  starts, ends = [], []
  for thr in cfg.thresholds:
    s, e = _runs(p > thr)
    keep = (e - s) >= cfg.min_length
    starts.append(s[keep])
    ends.append(e[keep])
  s = np.concatenate(starts)
  e = np.concatenate(ends)
  if s.size == 0:
    return []
  length = e - s
  margin = cfg.outer_ratio * length
  left_a = np.maximum(0, np.trunc(s - margin).astype(np.int64))
  if cfg.line_quirks:
    inner_b = np.minimum(e + 1, num_frames)
    right_a = e + 1
    right_b = np.minimum(
      num_frames - 1, np.trunc(e + margin + 1).astype(np.int64)
    )
  else:
    inner_b = e
    right_a = e
    right_b = np.minimum(num_frames, np.trunc(e + margin).astype(np.int64))
  right_b = np.maximum(right_b, right_a)  # an empty right margin
  inner = (cs[inner_b] - cs[s]) / (inner_b - s)
  outer_sum = (cs[s] - cs[left_a]) + (cs[right_b] - cs[right_a])
  outer_count = (s - left_a) + (right_b - right_a)
  outer = np.divide(
    outer_sum, outer_count, out=np.zeros_like(outer_sum), where=outer_count > 0
  )
  score = inner - cfg.outer_weight * outer
  proposals = zip(np.full_like(s, label), s, e, score)
  return nms(proposals, cfg.nms_threshold, line_quirks=cfg.line_quirks)


def _jhang(
  probs: np.ndarray, background: int, cfg: DecodeConfig
) -> list[Prediction]:
  """The JHang-det mean-filter + activity-threshold baseline decoder."""
  num_frames = probs.shape[0]
  k = int(cfg.smooth_kernel)
  if k > 0:
    cs = np.concatenate(
      [
        np.zeros((1, probs.shape[1])),
        np.cumsum(probs, axis=0, dtype=np.float64),
      ]
    )
    t = np.arange(num_frames)
    a = np.maximum(t - k, 0)
    b = np.minimum(t + k, num_frames)
    smooth = (cs[b] - cs[a]) / (b - a)[:, None]
  else:
    smooth = probs.astype(np.float64)
  s, e = _runs(1.0 - smooth[:, background] >= cfg.activity_threshold)
  if s.size == 0:
    return []
  cs = np.concatenate(
    [np.zeros((1, smooth.shape[1])), np.cumsum(smooth, axis=0)]
  )
  means = (cs[e] - cs[s]) / (e - s)[:, None]
  means[:, background] = -np.inf
  label = np.argmax(means, axis=1)
  score = means[np.arange(label.size), label]
  return [
    (int(c), int(a), int(b), float(v)) for c, a, b, v in zip(label, s, e, score)
  ]


def decode_segments(
  probs: np.ndarray,
  cfg: DecodeConfig = DecodeConfig(),
  background: int | None = None,
) -> list[Prediction]:
  """Decodes one video's frame probabilities into scored segments.

  Args:
    probs: (T, K + 1) per-frame class probabilities.
    cfg: decoder settings.
    background: background column; defaults to the last one.

  Returns:
    ``(label, start, end, score)`` tuples, ``end`` exclusive, sorted by
    label then descending score. Labels are column indices of ``probs``
    (0..K-1 when background is the last column).
  """
  probs = np.asarray(probs, dtype=np.float64)
  if probs.ndim != 2:
    raise ValueError(f'probs must be (T, K+1), got {probs.shape}.')
  num_columns = probs.shape[1]
  if background is None:
    background = num_columns - 1
  if not 0 <= background < num_columns:
    raise ValueError(f'background {background} out of range.')
  if probs.shape[0] == 0:
    return []
  if cfg.method not in DECODERS:
    raise ValueError(
      f'decoder {cfg.method!r}: expected one of {sorted(DECODERS)}'
    )
  return DECODERS[cfg.method](probs, background, cfg)


def _outer_inner(probs, background, cfg):
  out = []
  for c in range(probs.shape[1]):
    if c != background:
      out.extend(_outer_inner_class(probs[:, c], c, cfg))
  return out


# DecodeConfig.method -> decoder(probs, background, cfg); config validation
# reads the names.
DECODERS = {'outer_inner': _outer_inner, 'jhang': _jhang}


def decode_videos(
  probs: dict, cfg: DecodeConfig = DecodeConfig(), background: int | None = None
) -> dict:
  """``decode_segments`` over ``{video_id: (T, K + 1) probs}``."""
  return {vid: decode_segments(p, cfg, background) for vid, p in probs.items()}
