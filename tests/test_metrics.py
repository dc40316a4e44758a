"""Hand-computed checks of the four mAP conventions.

References: docs/method.md §6, docs/data_and_eval.md §2.7 and §3.6.
Segments are half-open
[start, end) throughout.
"""

import numpy as np
import pytest

from skel_jax import metrics as m


def _ap(result, label, thr):
  return result['per_class'][label][thr]


# ----------------------------------------------------------- helpers ----


def test_segment_iou_conventions():
  a, b = [[0, 10]], [[5, 15]]
  # Frame sets {0..9} and {5..14}: 5 / 15.
  assert m.segment_iou(a, b, 'exact')[0, 0] == pytest.approx(1 / 3)
  assert m.segment_iou(a, b, 'inclusive')[0, 0] == pytest.approx(1 / 3)
  assert m.segment_iou(a, b, 'continuous')[0, 0] == pytest.approx(1 / 3)
  # LINE: prediction frames {0..10} (11), GT frames {5..13} (9):
  # intersection {5..10} = 6, union 11 + 9 - 6 = 14 -> 3/7.
  assert m.segment_iou(a, b, 'line')[0, 0] == pytest.approx(3 / 7)
  # Disjoint: 0, except the continuous PKU-MMD formula: (5-10)/(20-0).
  c, d = [[0, 5]], [[10, 20]]
  assert m.segment_iou(c, d, 'exact')[0, 0] == 0
  assert m.segment_iou(c, d, 'inclusive')[0, 0] == 0
  assert m.segment_iou(c, d, 'continuous')[0, 0] == pytest.approx(-0.25)
  # Matrix shape.
  assert m.segment_iou([[0, 1], [2, 3], [4, 5]], [[0, 1], [1, 2]]).shape == (
    3,
    2,
  )


def test_segment_iou_line_perfect_prediction_is_n_minus_1_over_n_plus_1():
  for n in (2, 5, 30):
    iou = m.segment_iou([[7, 7 + n]], [[7, 7 + n]], 'line')[0, 0]
    assert iou == pytest.approx((n - 1) / (n + 1))
  # 1-frame GT has an empty frame set and can never match.
  assert m.segment_iou([[3, 4]], [[3, 4]], 'line')[0, 0] == 0


def test_voc_ap():
  # Points (r, p): (.5, 1), (.5, .5), (1, 2/3); envelope 1 on (0, .5] and
  # 2/3 on (.5, 1] -> .5 + 1/3 = 5/6.
  assert m.voc_ap([0.5, 0.5, 1], [1, 0.5, 2 / 3]) == pytest.approx(5 / 6)
  assert m.voc_ap([], []) == 0
  # Envelope lifts an early dip: p = [.5, 1] at r = [.5, 1] -> 1.
  assert m.voc_ap([0.5, 1], [0.5, 1]) == pytest.approx(1.0)


# ------------------------------------------------------------- exact ----

# 2 GTs + 3 predictions, one a duplicate of the first GT.
GT2 = {'v': [(0, 0, 10), (0, 20, 30)]}
PRED3 = {'v': [(0, 0, 10, 0.9), (0, 1, 10, 0.8), (0, 20, 31, 0.7)]}


def test_exact_duplicate_is_false_positive():
  # Ranks: [0,10) TP (IoU 1); [1,10) IoU .9 but g1 taken, g2 IoU 0 -> FP;
  # [20,31) IoU 10/11 -> TP. rec [.5,.5,1], prec [1,.5,2/3] -> AP 5/6.
  res = m.compute_map(GT2, PRED3)
  assert res['metric'] == 'exact'
  assert set(res['iou']) == {0.1, 0.2, 0.3, 0.4, 0.5}
  for thr in res['iou']:
    assert res['iou'][thr] == pytest.approx(500 / 6)
  assert res['mean'] == pytest.approx(500 / 6)


def test_exact_mean_over_gt_classes_only():
  gt = {'v': GT2['v'] + [(1, 40, 50)], 'w': []}
  # Class 1 has GT but no prediction -> 0; class 2 has predictions only and
  # is ignored; a prediction in a video without GT is a plain FP of class 0.
  pred = {'v': PRED3['v'] + [(2, 40, 50, 0.99)], 'w': []}
  res = m.compute_map(gt, pred, iou_thresholds=(0.5,))
  assert set(res['per_class']) == {0, 1}
  assert _ap(res, 1, 0.5) == 0
  assert res['iou'][0.5] == pytest.approx((500 / 6 + 0) / 2)


def test_exact_best_unmatched_gt_is_consumed():
  # g1 [0,10), g2 [6,16). A [0,10) .9 -> g1. B [2,12) .8: IoU(g1) = 8/12,
  # IoU(g2) = 6/14 = .4286. exact re-matches B to the unmatched g2 when
  # theta <= .4286: theta .4 -> AP 1; theta .5 -> B is FP:
  # rec [.5,.5], prec [1,.5] -> AP .5.
  gt = {'v': [(0, 0, 10), (0, 6, 16)]}
  pred = {'v': [(0, 0, 10, 0.9), (0, 2, 12, 0.8)]}
  res = m.compute_map(gt, pred, iou_thresholds=(0.4, 0.5))
  assert res['iou'][0.4] == pytest.approx(100)
  assert res['iou'][0.5] == pytest.approx(50)


def test_exact_ties_follow_video_order_then_input_order():
  # One GT in 'b'; two predictions with the same score. The stable sort
  # keeps the pred-dict order: FP first -> [FP, TP] -> AP .5; TP first ->
  # [TP, FP] -> AP 1.
  gt = {'b': [(0, 0, 10)]}
  fp_first = {'a': [(0, 0, 10, 0.5)], 'b': [(0, 0, 10, 0.5)]}
  tp_first = {'b': [(0, 0, 10, 0.5)], 'a': [(0, 0, 10, 0.5)]}
  assert m.compute_map(gt, fp_first, (0.5,))['iou'][0.5] == pytest.approx(50)
  assert m.compute_map(gt, tp_first, (0.5,))['iou'][0.5] == pytest.approx(100)


def test_exact_iou_threshold_is_inclusive():
  # IoU exactly .5 ([0,10) vs [0,5)) counts as a match at theta = .5.
  res = m.compute_map({'v': [(0, 0, 10)]}, {'v': [(0, 0, 5, 1.0)]}, (0.5, 0.6))
  assert res['iou'] == {0.5: pytest.approx(100), 0.6: 0}


# ------------------------------------------------------- voc_inclusive ----


def test_voc_inclusive_coincides_with_exact_without_conflicts():
  # Inclusive ends e-1 with +1 arithmetic equal the frame-set IoU, and the
  # duplicate's best GT is the matched one in both rules -> same 5/6.
  exact = m.compute_map(GT2, PRED3)
  voc = m.compute_map(GT2, PRED3, metric='voc_inclusive')
  assert voc['iou'] == pytest.approx(exact['iou'])
  assert voc['iou'][0.5] == pytest.approx(500 / 6)


def test_voc_inclusive_no_reassignment_differs_from_exact():
  # Same case as test_exact_best_unmatched_gt_is_consumed: B's first strict
  # max over ALL GTs is the matched g1 -> FP, even at theta .4.
  gt = {'v': [(0, 0, 10), (0, 6, 16)]}
  pred = {'v': [(0, 0, 10, 0.9), (0, 2, 12, 0.8)]}
  res = m.compute_map(gt, pred, (0.4, 0.5), metric='voc_inclusive')
  assert res['iou'][0.4] == pytest.approx(50)
  assert res['iou'][0.5] == pytest.approx(50)


def test_voc_inclusive_fp_in_video_without_gt_and_unknown_class():
  # [TP (.9), FP in video w (.8)] -> AP 1 (envelope); the class-3
  # prediction is dropped (not a GT class).
  gt = {'v': [(0, 0, 10)]}
  pred = {'v': [(0, 0, 10, 0.9), (3, 0, 10, 0.95)], 'w': [(0, 0, 10, 0.8)]}
  res = m.compute_map(gt, pred, (0.5,), metric='voc_inclusive')
  assert set(res['per_class']) == {0}
  assert res['iou'][0.5] == pytest.approx(100)
  # Low-ranked TP: [FP (.95 in w), TP (.9)] -> rec [0, 1], prec [0, .5]
  # -> AP .5.
  pred = {'w': [(0, 0, 10, 0.95)], 'v': [(0, 0, 10, 0.9)]}
  res = m.compute_map(gt, pred, (0.5,), metric='voc_inclusive')
  assert res['iou'][0.5] == pytest.approx(50)


# -------------------------------------------------------------- line ----


def test_line_perfect_prediction_off_by_one():
  # n = 30: IoU 29/31 = .935 -> matches at .9, not at .95 (exact does).
  gt = {'v': [(0, 0, 30)]}
  pred = {'v': [(0, 0, 30, 1.0)]}
  line = m.compute_map(gt, pred, (0.9, 0.95), metric='line')
  exact = m.compute_map(gt, pred, (0.9, 0.95))
  assert line['iou'] == {0.9: pytest.approx(100), 0.95: 0}
  assert exact['iou'] == {0.9: pytest.approx(100), 0.95: pytest.approx(100)}


def test_line_one_frame_gt_counts_but_never_matches():
  # g1 [0,30) matched by the .9 prediction; the 1-frame g2 [40,41) has an
  # empty frame set -> its perfect prediction is an FP.
  # rec [.5,.5], prec [1,.5] -> AP .5.
  gt = {'v': [(0, 0, 30), (0, 40, 41)]}
  pred = {'v': [(0, 0, 30, 0.9), (0, 40, 41, 0.8)]}
  res = m.compute_map(gt, pred, (0.5,), metric='line')
  assert res['iou'][0.5] == pytest.approx(50)
  assert m.compute_map(gt, pred, (0.5,))['iou'][0.5] == pytest.approx(100)


def test_line_matches_against_remaining_gts():
  # A [0,10) .9: line IoU g1 [0,10) = 9/11, g2 [6,16) = 5/15 -> g1.
  # B [2,12) .8: frames {2..12}; g1 {0..8}: 7/13, g2 {6..14}: 7/13; only g2
  # remains -> TP at .5 -> AP 1.
  gt = {'v': [(0, 0, 10), (0, 6, 16)]}
  pred = {'v': [(0, 0, 10, 0.9), (0, 2, 12, 0.8)]}
  res = m.compute_map(gt, pred, (0.5, 0.6), metric='line')
  assert res['iou'][0.5] == pytest.approx(100)
  # At .6 only A matches: rec [.5, .5] -> AP .5.
  assert res['iou'][0.6] == pytest.approx(50)


# --------------------------------------------------- pkummd_official ----


def test_pkummd_duplicates_share_one_gt():
  # Same case as test_exact_best_unmatched_gt_is_consumed, theta .4.
  # Both proposals are assigned to g1 (largest IoU), g2 stays uncovered:
  # positive = 1, N = 2, G = 2 -> P .5, R .5.
  # Ascending: B (.8): N=1, g1 count 2->1, P 1/1, R .5 -> +1*(.5-.5) = 0;
  #            A (.9): N=0 -> P=R=0 -> +1*(.5-0) = .5.  AP = .5
  gt = {'v': [(0, 0, 10), (0, 6, 16)]}
  pred = {'v': [(0, 0, 10, 0.9), (0, 2, 12, 0.8)]}
  res = m.compute_map(gt, pred, (0.4,), metric='pkummd_official', num_classes=1)
  assert res['iou'][0.4] == pytest.approx(50)


def test_pkummd_pure_duplicate_not_penalised_more_than_voc():
  # G = 1; A (.9) and B (.8) both on g. positive 1, N 2 -> P .5, R 1.
  # B: N=1, count 2->1 -> P 1, R 1 -> +0; A: N=0 -> +1*(1-0) = 1. AP = 1.
  gt = {'v': [(0, 0, 10)]}
  pred = {'v': [(0, 0, 10, 0.9), (0, 0, 9, 0.8)]}
  res = m.compute_map(gt, pred, (0.5,), metric='pkummd_official', num_classes=1)
  assert res['iou'][0.5] == pytest.approx(100)


def test_pkummd_ascending_interpolation():
  # G = 2: A (.9) -> g1, B (.8) unmatched, C (.7) -> g2.
  # Start: positive 2, N 3 -> P 2/3, R 1.
  # C: N=2, positive 1 -> P .5, R .5; best P 2/3 -> +2/3*.5 = 1/3
  # B: unassigned, skipped (N=1)
  # A: N=0 -> P=R=0 -> +2/3*.5 = 1/3.            AP = 2/3
  # (VOC/exact: rec [.5,.5,1], prec [1,.5,2/3] -> 5/6.)
  gt = {'v': [(0, 0, 10), (0, 20, 30)]}
  pred = {'v': [(0, 0, 10, 0.9), (0, 40, 50, 0.8), (0, 20, 30, 0.7)]}
  res = m.compute_map(gt, pred, (0.5,), metric='pkummd_official', num_classes=1)
  assert res['iou'][0.5] == pytest.approx(200 / 3)
  assert m.compute_map(gt, pred, (0.5,))['iou'][0.5] == pytest.approx(500 / 6)


def test_pkummd_low_scored_fp_in_other_video():
  # G = 1: A (.9) -> g in v; B (.5) in video w without GT (a proposal, not
  # a crash). P .5, R 1; B skipped; A: N=0 -> +.5*(1-0). AP .5 (exact: 1).
  gt = {'v': [(0, 0, 10)]}
  pred = {'v': [(0, 0, 10, 0.9)], 'w': [(0, 0, 10, 0.5)]}
  res = m.compute_map(gt, pred, (0.5,), metric='pkummd_official', num_classes=1)
  assert res['iou'][0.5] == pytest.approx(50)


def test_pkummd_tie_goes_to_later_gt():
  # X [5,15) has IoU 1/3 with both g1 [0,10) and g2 [10,20) -> assigned to
  # the later g2. Y [0,10) -> g1. positive 2, N 2 -> P 1, R 1.
  # Y (.8): N=1, positive 1 -> P 1, R .5 -> +1*.5; X: N=0 -> +1*.5. AP 1.
  # exact takes the first max (g1) for X, then Y finds g1 taken -> AP .5.
  gt = {'v': [(0, 0, 10), (0, 10, 20)]}
  pred = {'v': [(0, 5, 15, 0.9), (0, 0, 10, 0.8)]}
  res = m.compute_map(gt, pred, (0.3,), metric='pkummd_official', num_classes=1)
  assert res['iou'][0.3] == pytest.approx(100)
  assert m.compute_map(gt, pred, (0.3,))['iou'][0.3] == pytest.approx(50)


def test_pkummd_denominator_is_num_classes():
  # Class 0 perfect (100), class 2 predicted but without GT (0), classes 1
  # and 3 absent: mAP = 100 / 4.
  gt = {'v': [(0, 0, 10)]}
  pred = {'v': [(0, 0, 10, 0.9), (2, 20, 30, 0.8)]}
  res = m.compute_map(gt, pred, (0.5,), metric='pkummd_official', num_classes=4)
  assert res['iou'][0.5] == pytest.approx(25)
  assert set(res['per_class']) == {0, 1, 2, 3}
  with pytest.raises(ValueError):
    m.compute_map(gt, pred, metric='pkummd_official')
  with pytest.raises(ValueError):
    m.compute_map(gt, pred, metric='pkummd_official', num_classes=2)


# ------------------------------------------------------------ general ----


def test_validation_and_empty_inputs():
  with pytest.raises(ValueError):
    m.compute_map(GT2, PRED3, metric='ap')
  with pytest.raises(ValueError):
    m.compute_map(GT2, PRED3, iou_thresholds=(0.0,))
  with pytest.raises(ValueError):
    m.compute_map({'v': [(0, 0, 10, 0.5)]}, {})
  res = m.compute_map({}, {})
  assert res['mean'] == 0 and res['per_class'] == {}
  for metric in ('exact', 'line', 'voc_inclusive'):
    res = m.compute_map(GT2, {}, metric=metric)
    assert res['mean'] == 0


def test_all_metrics_agree_on_a_clean_case():
  # Long, well separated, perfectly matched segments with distinct scores:
  # every convention gives 100 at theta <= .5.
  gt = {'a': [(0, 0, 40), (1, 50, 90)], 'b': [(0, 10, 60)]}
  pred = {'a': [(0, 0, 40, 0.9), (1, 50, 90, 0.8)], 'b': [(0, 10, 60, 0.7)]}
  for metric in m.METRICS:
    res = m.compute_map(gt, pred, metric=metric, num_classes=2)
    assert res['mean'] == pytest.approx(100), metric


def _naive_voc(gt, pred, thr, reassign):
  """Loop-per-detection VOC mAP straight from the written rules."""

  def iou(a, b):  # frame-set IoU of half-open segments
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)

  classes = sorted({g[0] for gs in gt.values() for g in gs})
  aps = []
  for c in classes:
    dets = [(v, p) for v, ps in pred.items() for p in ps if p[0] == c]
    dets.sort(key=lambda d: -d[1][3])  # stable
    gts = {v: [g for g in gs if g[0] == c] for v, gs in gt.items()}
    used = {v: [False] * len(g) for v, g in gts.items()}
    npos = sum(len(g) for g in gts.values())
    tp = []
    for v, p in dets:
      best, best_j = -1.0, -1
      for j, g in enumerate(gts.get(v, [])):
        if reassign and used[v][j]:
          continue
        o = iou(p[1:3], g[1:3])
        if o > best:
          best, best_j = o, j
      hit = best >= thr and not used[v][best_j]
      if hit:
        used[v][best_j] = True
      tp.append(float(hit))
    if not tp:
      aps.append(0.0)
      continue
    ctp = np.cumsum(tp)
    aps.append(m.voc_ap(ctp / npos, ctp / np.arange(1, len(tp) + 1)))
  return 100 * np.mean(aps)


def test_random_case_matches_naive_reference():
  rng = np.random.default_rng(0)
  gt, pred = {}, {}
  for v in range(40):
    starts = np.sort(rng.choice(900, 8, replace=False))
    gt[v] = [(int(rng.integers(3)), int(s), int(s) + 40) for s in starts]
    pred[v] = [
      (
        c,
        s + int(rng.integers(-15, 15)),
        e + int(rng.integers(-15, 15)),
        float(rng.random()),
      )
      for c, s, e in gt[v]
      for _ in range(3)
    ]
  exact = m.compute_map(gt, pred)
  voc = m.compute_map(gt, pred, metric='voc_inclusive')
  for t in exact['iou']:
    assert exact['iou'][t] == pytest.approx(_naive_voc(gt, pred, t, True))
    assert voc['iou'][t] == pytest.approx(_naive_voc(gt, pred, t, False))
  assert 0 < voc['mean'] <= 100 and 0 < exact['mean'] <= 100


def _naive_pkummd(gt, pred, thr, num_classes):
  """The §2.7(a) procedure step by step, incl. the ground[-1] comparison."""

  def ov(p, g):
    if p[0] != g[0] or p[4] != g[4]:
      return 0.0
    return (min(p[2], g[2]) - max(p[1], g[1])) / (
      max(p[2], g[2]) - min(p[1], g[1])
    )

  total = 0.0
  for c in range(num_classes):
    props = [tuple(p) + (v,) for v, ps in pred.items() for p in ps if p[0] == c]
    ground = [
      tuple(g) + (None, v) for v, gs in gt.items() for g in gs if g[0] == c
    ]  # (label, start, end, confidence, video)
    props.sort(key=lambda x: x[3])
    assign = [-1] * len(props)
    count = [0] * len(ground)
    for x, p in enumerate(props):
      for y, g in enumerate(ground):
        if ov(p, g) < thr:
          continue
        if ov(p, g) < ov(p, ground[assign[x]]):
          continue
        assign[x] = y
      if assign[x] != -1:
        count[assign[x]] += 1
    pos = sum(k > 0 for k in count)
    n, big_g = len(props), len(ground)
    pr = lambda: (pos / n, pos / big_g) if n and big_g else (0.0, 0.0)
    old_p, old_r = pr()
    score = 0.0
    for x in range(len(props)):
      n -= 1
      if assign[x] == -1:
        continue
      count[assign[x]] -= 1
      if count[assign[x]] == 0:
        pos -= 1
      p_, r_ = pr()
      old_p = max(old_p, p_)
      score += old_p * (old_r - r_)
      old_r = r_
    total += score
  return 100 * total / num_classes


def test_pkummd_random_case_matches_naive_reference():
  rng = np.random.default_rng(1)
  gt, pred = {}, {}
  for v in range(25):
    starts = np.sort(rng.choice(600, 6, replace=False))
    gt[v] = [(int(rng.integers(3)), int(s), int(s) + 30) for s in starts]
    # Rounded scores create ties, which both must break the same way.
    pred[v] = [
      (
        c,
        s + int(rng.integers(-12, 12)),
        e + int(rng.integers(-12, 12)),
        round(float(rng.random()), 1),
      )
      for c, s, e in gt[v]
      for _ in range(3)
    ]
  res = m.compute_map(gt, pred, metric='pkummd_official', num_classes=4)
  for t in res['iou']:
    assert res['iou'][t] == pytest.approx(_naive_pkummd(gt, pred, t, 4))
