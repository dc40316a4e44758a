"""ActivityNet-style detection JSON: writing, checked reading, scoring.

File layouts (frame units, ``end`` exclusive):
  GT:    {"database": {vid: {"annotations": [{"label": L, "segment": [s, e]}]}}}
  preds: {"results": {vid: [{"label": L, "segment": [s, e], "score": x}]}}

Every entry is checked: a malformed segment, a missing / NaN / infinite
score or a JSON syntax error is an error naming the file and the entry (or
line and column). Prediction videos or labels that never occur in the ground
truth (usually a mismatched file, which would score 0) are ``mismatches``:
warnings with counts, errors under ``strict``.

Labels may be class names or integers. They are mapped to indices as the
sorted unique GT labels followed by the sorted prediction-only labels (those
can never be TPs, but they keep their own index). Output keys use the labels
as they appear in the JSON. For 'pkummd_official' the mAP denominator is
``num_classes``; indices beyond the labels seen in the files have no name
and are left out of ``per_class``.

Training writes its ground truth and predictions with ``save_activitynet``;
``skel_jax.evaluate`` is the command line over ``evaluate_files``.
"""

import json
import math

from skel_jax import metrics


def _plain_number(x):
  """A JSON-friendly int when integral, else float."""
  x = float(x)
  return int(x) if x.is_integer() else x


def to_activitynet(
  segments: dict, class_names=None, kind: str | None = None
) -> dict:
  """Converts GT or predictions to the ActivityNet detection JSON layout.

  Args:
    segments: ``{vid: [(label, start, end)]}`` (GT) or
      ``{vid: [(label, start, end, score)]}`` (predictions), ``end``
      exclusive.
    class_names: optional sequence mapping label index -> name; without it
      the integer labels are written.
    kind: 'gt' or 'pred'; None infers it from the tuple width (a table
      without any segment is then written as GT, so pass 'pred' when
      exporting predictions that may all be empty).

  Returns:
    ``{"database": ...}`` for GT or ``{"results": ...}`` for predictions.
  """
  widths = {len(item) for items in segments.values() for item in items}
  if len(widths) > 1 or not widths <= {3, 4}:
    raise ValueError(f'Mixed or invalid segment tuple widths: {widths}')
  if kind is None:
    kind = 'pred' if widths == {4} else 'gt'
  if kind not in ('gt', 'pred') or widths - {3 if kind == 'gt' else 4}:
    raise ValueError(f'kind={kind!r} does not fit tuple widths {widths}.')
  is_pred = kind == 'pred'

  def name(label):
    return class_names[int(label)] if class_names is not None else int(label)

  if is_pred:
    return {
      'results': {
        str(vid): [
          {
            'label': name(item[0]),
            'segment': [_plain_number(item[1]), _plain_number(item[2])],
            'score': float(item[3]),
          }
          for item in items
        ]
        for vid, items in segments.items()
      }
    }
  return {
    'database': {
      str(vid): {
        'annotations': [
          {
            'label': name(item[0]),
            'segment': [_plain_number(item[1]), _plain_number(item[2])],
          }
          for item in items
        ]
      }
      for vid, items in segments.items()
    }
  }


def save_activitynet(
  path: str, segments: dict, class_names=None, kind: str | None = None
) -> None:
  """Writes ``to_activitynet(segments, class_names, kind)`` to ``path``."""
  with open(path, 'w') as f:
    json.dump(to_activitynet(segments, class_names, kind), f)


def _is_number(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _label(item, where):
  if not isinstance(item, dict) or 'label' not in item:
    raise ValueError(
      f"{where}: no 'label' (expected an object with label, segment[, score])"
    )
  label = item['label']
  if isinstance(label, float) and label.is_integer():
    label = int(label)
  if not isinstance(label, (str, int)) or isinstance(label, bool):
    raise ValueError(f'{where}: label {label!r} is not a name or an integer')
  return label


def _segment(item, where):
  seg = item.get('segment')
  if (
    not isinstance(seg, (list, tuple))
    or len(seg) != 2
    or not all(_is_number(x) and math.isfinite(x) for x in seg)
    or seg[1] < seg[0]
  ):
    raise ValueError(
      f'{where}: segment {seg!r} is not [start, end] with '
      'finite numbers and start <= end'
    )
  return _plain_number(seg[0]), _plain_number(seg[1])


def _score(item, where):
  if 'score' not in item:
    raise ValueError(f"{where}: no 'score' (every prediction needs one)")
  score = item['score']
  if not _is_number(score) or not math.isfinite(score):
    raise ValueError(f'{where}: score {score!r} is not a finite number')
  return float(score)


def _read_json(path):
  try:
    with open(path) as f:
      text = f.read()
  except OSError as e:
    raise ValueError(f'{path}: cannot read ({e.strerror})') from e
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(
      f'{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}'
    ) from e


def load_activitynet(path: str) -> dict:
  """Reads an ActivityNet detection JSON file, keeping the raw labels.

  Returns:
    ``{vid: [(label, start, end)]}`` for a GT file ("database") or
    ``{vid: [(label, start, end, score)]}`` for a prediction file
    ("results"); labels exactly as in the file, coordinates as numbers.

  Raises:
    ValueError: naming the file and entry of anything malformed.
  """
  return _load(path)[1]


def _load(path):
  """('gt' | 'pred', table) of ``load_activitynet``."""
  data = _read_json(path)
  if isinstance(data, dict) and isinstance(data.get('database'), dict):
    out = {}
    for vid, entry in data['database'].items():
      anns = entry.get('annotations', []) if isinstance(entry, dict) else None
      if not isinstance(anns, list):
        raise ValueError(f'{path}: database[{vid!r}] has no "annotations" list')
      out[vid] = []
      for i, a in enumerate(anns):
        where = f'{path}: database[{vid!r}].annotations[{i}]'
        out[vid].append((_label(a, where),) + _segment(a, where))
    return 'gt', out
  if isinstance(data, dict) and isinstance(data.get('results'), dict):
    out = {}
    for vid, items in data['results'].items():
      if not isinstance(items, list):
        raise ValueError(f'{path}: results[{vid!r}] is not a list')
      out[vid] = []
      for i, r in enumerate(items):
        where = f'{path}: results[{vid!r}][{i}]'
        out[vid].append(
          (_label(r, where),) + _segment(r, where) + (_score(r, where),)
        )
    return 'pred', out
  raise ValueError(f'{path}: neither a "database" nor a "results" file.')


def _some(items, n=3):
  items = sorted(items, key=lambda x: (isinstance(x, str), str(x)))
  more = ', ...' if len(items) > n else ''
  return ', '.join(repr(x) for x in items[:n]) + more


def mismatches(gt_raw: dict, pred_raw: dict) -> list:
  """Warnings (with counts) for predictions that cannot match the GT: video
  ids or labels the GT does not have, and GT videos without predictions."""
  out = []
  extra = set(pred_raw) - set(gt_raw)
  if extra:
    out.append(
      f'{len(extra)} of {len(pred_raw)} predicted videos are not in '
      f'the ground truth ({_some(extra)})'
    )
  missing = set(gt_raw) - set(pred_raw)
  if missing:
    out.append(
      f'{len(missing)} of {len(gt_raw)} ground-truth videos have no '
      f'predictions ({_some(missing)})'
    )
  gt_labels = {item[0] for items in gt_raw.values() for item in items}
  pred_labels = {item[0] for items in pred_raw.values() for item in items}
  unknown = pred_labels - gt_labels
  if unknown:
    msg = (
      f'{len(unknown)} of {len(pred_labels)} predicted labels never '
      f'occur in the ground truth ({_some(unknown)})'
    )
    kinds = lambda labels: {type(x).__name__ for x in labels}
    if gt_labels and kinds(gt_labels) != kinds(pred_labels):
      msg += (
        f'; the ground truth labels are {"/".join(kinds(gt_labels))}, '
        f'the predicted ones {"/".join(kinds(pred_labels))}'
      )
    out.append(msg)
  return out


def _sort_key(label):
  # Orders ints numerically, strings lexically, and never compares the two.
  return (isinstance(label, str), label)


def label_vocabulary(gt_raw: dict, pred_raw: dict) -> list:
  """Sorted unique GT labels, then sorted prediction-only labels."""
  gt_labels = {item[0] for items in gt_raw.values() for item in items}
  pred_labels = {item[0] for items in pred_raw.values() for item in items}
  return sorted(gt_labels, key=_sort_key) + sorted(
    pred_labels - gt_labels, key=_sort_key
  )


def _index_table(raw: dict, index: dict) -> dict:
  return {
    vid: [(index[item[0]],) + tuple(item[1:]) for item in items]
    for vid, items in raw.items()
  }


def evaluate_files(
  gt_path: str,
  pred_path: str,
  metric: str = 'exact',
  iou_thresholds=metrics.DEFAULT_IOU_THRESHOLDS,
  num_classes: int | None = None,
  strict: bool = False,
) -> dict:
  """Scores a prediction file against a GT file.

  Returns:
    ``metrics.compute_map``'s dict with ``per_class`` keyed by the labels as
    they appear in the JSON, plus ``warnings`` (``mismatches``; with
    ``strict`` they raise ValueError instead).
  """
  gt_kind, gt_raw = _load(gt_path)
  pred_kind, pred_raw = _load(pred_path)
  if gt_kind != 'gt':
    raise ValueError(f'{gt_path}: expected a ground-truth ("database") file')
  if pred_kind != 'pred':
    raise ValueError(f'{pred_path}: expected a prediction ("results") file')
  warnings = mismatches(gt_raw, pred_raw)
  if strict and warnings:
    raise ValueError(
      f'{pred_path} does not match {gt_path}: '
      + '; '.join(warnings)
      + ' (--strict)'
    )
  vocab = label_vocabulary(gt_raw, pred_raw)
  if num_classes is not None and len(vocab) > num_classes:
    raise ValueError(
      f'{len(vocab)} distinct labels > num_classes {num_classes}.'
    )
  index = {label: i for i, label in enumerate(vocab)}
  result = metrics.compute_map(
    _index_table(gt_raw, index),
    _index_table(pred_raw, index),
    iou_thresholds=iou_thresholds,
    metric=metric,
    num_classes=num_classes,
  )
  result['per_class'] = {
    vocab[c]: aps for c, aps in result['per_class'].items() if c < len(vocab)
  }
  result['warnings'] = warnings
  return result


def format_table(result: dict) -> str:
  """A plain-text table: mAP per threshold and mean, then per-class AP."""
  thresholds = list(result['iou'])
  names = [str(label) for label in result['per_class']]
  width = max([len('mAP'), len('class')] + [len(n) for n in names])
  header = (
    f'{"class":<{width}}'
    + ''.join(f'  {f"@{t:g}":>7}' for t in thresholds)
    + '     mean'
  )
  lines = [f'metric: {result["metric"]}', header, '-' * len(header)]

  def row(name, values):
    mean = sum(values) / len(values)
    return (
      f'{name:<{width}}'
      + ''.join(f'  {v:7.2f}' for v in values)
      + f'  {mean:7.2f}'
    )

  lines.append(row('mAP', [result['iou'][t] for t in thresholds]))
  lines.append('-' * len(header))
  for name, aps in zip(names, result['per_class'].values()):
    lines.append(row(name, [aps[t] for t in thresholds]))
  return '\n'.join(lines)


def result_to_json(result: dict) -> dict:
  """JSON-ready copy: threshold and label keys become strings."""
  return {
    'metric': result['metric'],
    'iou': {str(t): v for t, v in result['iou'].items()},
    'mean': result['mean'],
    'per_class': {
      str(label): {str(t): v for t, v in aps.items()}
      for label, aps in result['per_class'].items()
    },
    'warnings': list(result.get('warnings', [])),
  }
