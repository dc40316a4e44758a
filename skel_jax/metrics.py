"""Temporal action localisation mAP under four conventions, one API.

Inputs always use the skel_jax convention: ground truth is
``{video_id: [(label, start, end), ...]}`` and predictions are
``{video_id: [(label, start, end, score), ...]}`` in frame units with
``end`` EXCLUSIVE. Each metric maps that convention onto its reference:

``'exact'`` (default; docs/method.md §6)
  IoU of the integer frame sets ``[s, e)``. Per class, predictions from all
  videos are sorted by descending score (stable: ties keep video order, i.e.
  the order of the ``pred`` dict, then list order). A prediction is a TP
  when an unmatched GT of its video and class has IoU >= theta; the
  best-IoU unmatched GT (first one on ties) is consumed. VOC all-point AP
  with the monotone precision envelope; mAP over the classes present in the
  GT (a GT class without predictions scores 0).

``'line'`` (LINE AAAI'23 release, docs/data_and_eval.md §3.6)
  Same matching as 'exact' but with the released off-by-one frame sets. Our
  GT ``[s, e)`` is their run ``[s, e_last = e - 1]`` whose frame set is
  ``range(s, e - 1)`` (last frame dropped). Our prediction ``[s, e)`` is a
  run of frames ``s..e-1``; they store it with end ``e + 1`` and its frame
  set is ``range(s, e + 1)`` (one extra frame). A perfect prediction of an
  n-frame run therefore has IoU (n - 1) / (n + 1). Coordinates are rounded
  to integers.

``'pkummd_official'`` (PKU-MMD evaluate.py, docs/data_and_eval.md §2.7(a))
  Continuous IoU ``(min(e) - max(s)) / (max(e) - min(s))`` on the given
  ``(start, end)`` values (for half-open integer segments that overlap it
  equals the frame-set IoU; disjoint ones give a negative value that never
  reaches theta; a 0/0 pair counts as 0 instead of crashing). Each proposal
  is assigned, independently of its score, to the same-video GT with the
  largest IoU >= theta (ties: the later GT). Several proposals may share a
  GT; duplicates are not false positives but count in the proposal total.
  AP is the ascending "interpolated AP" of the reference and mAP is the sum
  over ``num_classes`` classes divided by ``num_classes`` (absent classes
  score 0). Differences from the reference script: every GT video counts
  (the script silently drops the GT of a video without a prediction file;
  here that equals writing an empty file for it), and predictions for
  videos without GT are unmatched proposals instead of a crash.

``'voc_inclusive'`` (JHang2020 eval_detect_mAP, docs/data_and_eval.md §2.7(b))
  Our half-open end ``e`` becomes the inclusive last frame ``e - 1``; IoU
  uses the +1 inclusive convention (numerically the frame-set IoU). Each
  detection (descending score, stable) is compared with EVERY GT of its
  class and video, matched ones included; its first strict maximum decides:
  TP if >= theta and unmatched, FP if that GT is already matched (no
  fall-back to another GT) or below theta. VOC all-point AP; mAP over GT
  classes.

All results are percentages.
"""

import numpy as np

METRICS = ('exact', 'line', 'pkummd_official', 'voc_inclusive')
DEFAULT_IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)

_IOU_CONVENTION = {
  'exact': 'exact',
  'line': 'line',
  'pkummd_official': 'continuous',
  'voc_inclusive': 'inclusive',
}


def segment_iou(pred, gt, convention: str = 'exact') -> np.ndarray:
  """Pairwise temporal IoU between two sets of half-open segments.

  Args:
    pred: (N, 2) ``[start, end)`` pairs (the predictions for 'line').
    gt: (M, 2) ``[start, end)`` pairs (the ground truth for 'line').
    convention: 'exact' (frame-set IoU), 'line' (prediction frames
      ``range(s, e + 1)`` vs. GT frames ``range(s, e - 1)``), 'continuous'
      (PKU-MMD, may be negative for disjoint segments) or 'inclusive'
      (JHang: inclusive ends ``e - 1`` with +1 arithmetic).

  Returns:
    (N, M) IoU matrix; pairs with an empty union get 0.
  """
  a = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
  b = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
  sa, ea = a[:, 0:1], a[:, 1:2]
  sb, eb = b[None, :, 0], b[None, :, 1]
  if convention == 'continuous':
    num = np.minimum(ea, eb) - np.maximum(sa, sb)
    den = np.maximum(ea, eb) - np.minimum(sa, sb)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)
  if convention == 'inclusive':
    ea, eb = ea - 1, eb - 1  # half-open end -> inclusive last frame
    inter = np.minimum(ea, eb) - np.maximum(sa, sb) + 1
    union = (ea - sa + 1) + (eb - sb + 1) - inter
    ok = (inter > 0) & (union > 0)
    return np.divide(inter, union, out=np.zeros_like(inter), where=ok)
  if convention == 'line':
    sa, ea, sb, eb = (np.rint(x) for x in (sa, ea, sb, eb))
    ea = ea + 1  # the stored proposal end includes one frame past the run
    eb = eb - 1  # range(s, e_last) drops the last GT frame
  elif convention != 'exact':
    raise ValueError(f'Unknown IoU convention {convention!r}.')
  inter = np.maximum(0.0, np.minimum(ea, eb) - np.maximum(sa, sb))
  union = np.maximum(0.0, ea - sa) + np.maximum(0.0, eb - sb) - inter
  return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def voc_ap(recall, precision) -> float:
  """VOC all-point AP with the monotone (right-to-left max) envelope."""
  rec = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
  prec = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
  prec = np.maximum.accumulate(prec[::-1])[::-1]
  step = np.flatnonzero(rec[1:] != rec[:-1]) + 1
  return float(np.sum((rec[step] - rec[step - 1]) * prec[step]))


class _Tables:
  """Flat arrays of GT and predictions with integer video ids."""

  def __init__(self, gt: dict, pred: dict):
    videos = {v: i for i, v in enumerate(gt)}
    for v in pred:
      videos.setdefault(v, len(videos))
    self.g_vid, self.g_lab, self.g_seg = self._flatten(gt, videos, 3)
    self.p_vid, self.p_lab, p_seg = self._flatten(pred, videos, 4)
    self.p_seg, self.p_score = p_seg[:, :2], p_seg[:, 2]

  @staticmethod
  def _flatten(table: dict, videos: dict, width: int):
    vid, lab, rest = [], [], []
    for v, items in table.items():
      for item in items:
        if len(item) != width:
          raise ValueError(f'Expected {width}-tuples in video {v!r}: {item}')
        vid.append(videos[v])
        lab.append(int(item[0]))
        rest.append([float(x) for x in item[1:]])
    return (
      np.asarray(vid, np.int64),
      np.asarray(lab, np.int64),
      np.asarray(rest, np.float64).reshape(-1, width - 1),
    )

  def class_view(self, c: int):
    """GT and prediction arrays restricted to class ``c``."""
    gi = np.flatnonzero(self.g_lab == c)
    pi = np.flatnonzero(self.p_lab == c)
    return (
      self.g_vid[gi],
      self.g_seg[gi],
      self.p_vid[pi],
      self.p_seg[pi],
      self.p_score[pi],
    )


def _video_blocks(g_vid, g_seg, p_vid, p_seg, convention):
  """Per prediction: global GT ids of its video and the IoU row to them."""
  rows = [None] * p_vid.size
  for v in np.unique(p_vid):
    pi = np.flatnonzero(p_vid == v)
    gi = np.flatnonzero(g_vid == v)
    if gi.size == 0:
      continue
    ious = segment_iou(p_seg[pi], g_seg[gi], convention)
    for r, p in enumerate(pi):
      rows[p] = (gi, ious[r])
  return rows


def _voc_class_ap(view, thresholds, metric) -> list[float]:
  """Per-threshold VOC AP of one class for 'exact', 'line', 'voc_inclusive'."""
  g_vid, g_seg, p_vid, p_seg, p_score = view
  num_gt = g_vid.size
  if p_vid.size == 0 or num_gt == 0:
    return [0.0] * len(thresholds)
  order = np.argsort(-p_score, kind='stable')
  rows = _video_blocks(
    g_vid, g_seg, p_vid[order], p_seg[order], _IOU_CONVENTION[metric]
  )
  # The best IoU and first-max GT of every prediction over ALL same-video
  # GTs; predictions below theta here can never match.
  best = np.full(order.size, -np.inf)
  best_gt = np.full(order.size, -1)
  for r, row in enumerate(rows):
    if row is not None:
      best[r] = row[1].max()
      best_gt[r] = row[0][np.argmax(row[1])]
  aps = []
  for thr in thresholds:
    tp = np.zeros(order.size)
    cand = np.flatnonzero(best >= thr)
    if metric == 'voc_inclusive':
      # No re-assignment: the first (highest-ranked) candidate pointing at a
      # GT is its TP, later ones pointing at it are FPs.
      _, first = np.unique(best_gt[cand], return_index=True)
      tp[cand[first]] = 1.0
    else:
      matched = np.zeros(num_gt, bool)
      for r in cand:
        gi, iou = rows[r]
        free = np.where(matched[gi], -np.inf, iou)
        j = int(np.argmax(free))  # first strict maximum among unmatched
        if free[j] >= thr:
          tp[r] = 1.0
          matched[gi[j]] = True
    ctp = np.cumsum(tp)
    recall = ctp / num_gt
    precision = ctp / np.arange(1, order.size + 1)
    aps.append(voc_ap(recall, precision) if ctp[-1] > 0 else 0.0)
  return aps


def _pkummd_ap(assigned: np.ndarray, num_gt: int) -> float:
  """PKU-MMD "interpolated AP" of proposals in ascending-score order.

  Args:
    assigned: per proposal (ascending confidence), the GT index it was
      assigned to, or -1.
    num_gt: number of GT segments of the class.
  """
  total = assigned.size
  if total == 0 or num_gt == 0:
    return 0.0
  count = np.bincount(assigned[assigned >= 0], minlength=num_gt)
  positive = int(np.count_nonzero(count))
  best_p, prev_r = positive / total, positive / num_gt
  score = 0.0
  for i in np.flatnonzero(assigned >= 0):
    left = total - i - 1  # proposals still in the list after removing i
    g = assigned[i]
    count[g] -= 1
    if count[g] == 0:
      positive -= 1
    p, r = (positive / left, positive / num_gt) if left > 0 else (0.0, 0.0)
    best_p = max(best_p, p)
    score += best_p * (prev_r - r)
    prev_r = r
  return score


def _pkummd_class_ap(view, thresholds) -> list[float]:
  """Per-threshold official PKU-MMD AP of one class."""
  g_vid, g_seg, p_vid, p_seg, p_score = view
  if p_vid.size == 0 or g_vid.size == 0:
    return [0.0] * len(thresholds)
  order = np.argsort(p_score, kind='stable')  # ascending, ties keep order
  rows = _video_blocks(g_vid, g_seg, p_vid[order], p_seg[order], 'continuous')
  aps = []
  for thr in thresholds:
    assigned = np.full(order.size, -1)
    for r, row in enumerate(rows):
      if row is None:
        continue
      gi, iou = row
      ok = np.where(iou >= thr, iou, -np.inf)
      j = ok.size - 1 - int(np.argmax(ok[::-1]))  # ties -> the later GT
      if ok[j] >= thr:
        assigned[r] = gi[j]
    aps.append(float(_pkummd_ap(assigned, g_vid.size)))
  return aps


def compute_map(
  gt: dict,
  pred: dict,
  iou_thresholds=DEFAULT_IOU_THRESHOLDS,
  metric: str = 'exact',
  num_classes: int | None = None,
) -> dict:
  """Localisation mAP (percent) under one of ``METRICS``.

  Args:
    gt: ``{video: [(label, start, end), ...]}``, ``end`` exclusive.
    pred: ``{video: [(label, start, end, score), ...]}``, ``end`` exclusive.
    iou_thresholds: thresholds theta in (0, 1].
    metric: 'exact', 'line', 'pkummd_official' or 'voc_inclusive' (see the
      module docstring for each convention).
    num_classes: required by 'pkummd_official' (mAP denominator, e.g. 51);
      for the other metrics it only validates the labels.

  Returns:
    ``{'metric': metric, 'iou': {theta: mAP}, 'mean': mean over thetas,
    'per_class': {label: {theta: AP}}}``; ``per_class`` lists the GT
    classes, or every class ``0..num_classes-1`` for 'pkummd_official'.
  """
  if metric not in METRICS:
    raise ValueError(f'Unknown metric {metric!r}; expected one of {METRICS}.')
  thresholds = tuple(float(t) for t in iou_thresholds)
  if not thresholds or any(not 0.0 < t <= 1.0 for t in thresholds):
    raise ValueError(f'IoU thresholds must lie in (0, 1]: {thresholds}')
  if metric == 'pkummd_official' and num_classes is None:
    raise ValueError("metric='pkummd_official' needs num_classes.")
  tables = _Tables(gt, pred)
  if num_classes is not None:
    for name, lab in (('GT', tables.g_lab), ('prediction', tables.p_lab)):
      if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise ValueError(f'{name} labels outside [0, {num_classes}).')

  if metric == 'pkummd_official':
    classes = list(range(num_classes))
  else:
    classes = sorted(int(c) for c in np.unique(tables.g_lab))
  per_class = {}
  for c in classes:
    view = tables.class_view(c)
    if metric == 'pkummd_official':
      aps = _pkummd_class_ap(view, thresholds)
    else:
      aps = _voc_class_ap(view, thresholds, metric)
    per_class[c] = {t: 100.0 * ap for t, ap in zip(thresholds, aps)}

  denominator = len(classes)
  by_iou = {}
  for t in thresholds:
    total = sum(per_class[c][t] for c in classes)
    by_iou[t] = float(total / denominator) if denominator else 0.0
  return {
    'metric': metric,
    'iou': by_iou,
    'mean': float(np.mean(list(by_iou.values()))),
    'per_class': per_class,
  }
