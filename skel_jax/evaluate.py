r"""Standalone localisation evaluator on ActivityNet-style JSON files.

Usage:
  python -m skel_jax.evaluate --gt=GT.json --pred=PRED.json \
      [--metric=exact] [--iou=0.1,0.2,0.3,0.4,0.5] [--num_classes=N] \
      [--out=RESULT.json]

File layouts (frame units, ``end`` exclusive):
  GT:    {"database": {vid: {"annotations": [{"label": L, "segment": [s, e]}]}}}
  preds: {"results": {vid: [{"label": L, "segment": [s, e], "score": x}]}}

Labels may be class names or integers. They are mapped to indices as the
sorted unique GT labels followed by the sorted prediction-only labels (those
can never be TPs, but they keep their own index). Output keys use the labels
as they appear in the JSON. For 'pkummd_official' the mAP denominator is
``--num_classes``; indices beyond the labels seen in the files have no name
and are left out of ``per_class``.

The library functions (``to_activitynet``, ``save_activitynet``,
``load_activitynet``, ``evaluate_files``) let training code export and score
predictions without the command line.
"""
import json
import os

from absl import app
from absl import flags

from skel_jax import metrics


def _plain_number(x):
  """A JSON-friendly int when integral, else float."""
  x = float(x)
  return int(x) if x.is_integer() else x


def to_activitynet(segments: dict, class_names=None,
                   kind: str | None = None) -> dict:
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
    return {'results': {
        str(vid): [{'label': name(item[0]),
                    'segment': [_plain_number(item[1]),
                                _plain_number(item[2])],
                    'score': float(item[3])} for item in items]
        for vid, items in segments.items()}}
  return {'database': {
      str(vid): {'annotations': [
          {'label': name(item[0]),
           'segment': [_plain_number(item[1]), _plain_number(item[2])]}
          for item in items]}
      for vid, items in segments.items()}}


def save_activitynet(path: str, segments: dict, class_names=None,
                     kind: str | None = None) -> None:
  """Writes ``to_activitynet(segments, class_names, kind)`` to ``path``."""
  with open(path, 'w') as f:
    json.dump(to_activitynet(segments, class_names, kind), f)


def load_activitynet(path: str) -> dict:
  """Reads an ActivityNet detection JSON file, keeping the raw labels.

  Returns:
    ``{vid: [(label, start, end)]}`` for a GT file ("database") or
    ``{vid: [(label, start, end, score)]}`` for a prediction file
    ("results"); labels exactly as in the file, coordinates as numbers.
  """
  with open(path) as f:
    data = json.load(f)
  if 'database' in data:
    return {vid: [(a['label'], _plain_number(a['segment'][0]),
                   _plain_number(a['segment'][1]))
                  for a in entry.get('annotations', [])]
            for vid, entry in data['database'].items()}
  if 'results' in data:
    return {vid: [(r['label'], _plain_number(r['segment'][0]),
                   _plain_number(r['segment'][1]), float(r['score']))
                  for r in items]
            for vid, items in data['results'].items()}
  raise ValueError(f'{path}: neither a "database" nor a "results" file.')


def _sort_key(label):
  # Orders ints numerically, strings lexically, and never compares the two.
  return (isinstance(label, str), label)


def label_vocabulary(gt_raw: dict, pred_raw: dict) -> list:
  """Sorted unique GT labels, then sorted prediction-only labels."""
  gt_labels = {item[0] for items in gt_raw.values() for item in items}
  pred_labels = {item[0] for items in pred_raw.values() for item in items}
  return (sorted(gt_labels, key=_sort_key) +
          sorted(pred_labels - gt_labels, key=_sort_key))


def _index_table(raw: dict, index: dict) -> dict:
  return {vid: [(index[item[0]],) + tuple(item[1:]) for item in items]
          for vid, items in raw.items()}


def evaluate_files(gt_path: str, pred_path: str, metric: str = 'exact',
                   iou_thresholds=metrics.DEFAULT_IOU_THRESHOLDS,
                   num_classes: int | None = None) -> dict:
  """Scores a prediction file against a GT file.

  Returns:
    ``metrics.compute_map``'s dict with ``per_class`` keyed by the labels as
    they appear in the JSON.
  """
  gt_raw = load_activitynet(gt_path)
  pred_raw = load_activitynet(pred_path)
  vocab = label_vocabulary(gt_raw, pred_raw)
  if num_classes is not None and len(vocab) > num_classes:
    raise ValueError(f'{len(vocab)} distinct labels > num_classes '
                     f'{num_classes}.')
  index = {label: i for i, label in enumerate(vocab)}
  result = metrics.compute_map(
      _index_table(gt_raw, index), _index_table(pred_raw, index),
      iou_thresholds=iou_thresholds, metric=metric, num_classes=num_classes)
  result['per_class'] = {vocab[c]: aps for c, aps in result['per_class'].items()
                         if c < len(vocab)}
  return result


def format_table(result: dict) -> str:
  """A plain-text table: mAP per threshold and mean, then per-class AP."""
  thresholds = list(result['iou'])
  names = [str(label) for label in result['per_class']]
  width = max([len('mAP'), len('class')] + [len(n) for n in names])
  header = (f'{"class":<{width}}' +
            ''.join(f'  {f"@{t:g}":>7}' for t in thresholds) + '     mean')
  lines = [f'metric: {result["metric"]}', header, '-' * len(header)]

  def row(name, values):
    mean = sum(values) / len(values)
    return (f'{name:<{width}}' + ''.join(f'  {v:7.2f}' for v in values) +
            f'  {mean:7.2f}')

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
      'per_class': {str(label): {str(t): v for t, v in aps.items()}
                    for label, aps in result['per_class'].items()},
  }


def define_flags(flag_values=flags.FLAGS) -> None:
  """Defines the CLI flags.

  Called only when run as a script, so importing this module (e.g. from the
  training code) never defines global flags that could clash.
  """
  flags.DEFINE_string('gt', None, 'Ground-truth JSON ("database" layout).',
                      flag_values=flag_values)
  flags.DEFINE_string('pred', None, 'Prediction JSON ("results" layout).',
                      flag_values=flag_values)
  flags.DEFINE_enum('metric', 'exact', list(metrics.METRICS),
                    'mAP convention.', flag_values=flag_values)
  flags.DEFINE_list('iou', [str(t) for t in metrics.DEFAULT_IOU_THRESHOLDS],
                    'Comma-separated temporal IoU thresholds.',
                    flag_values=flag_values)
  flags.DEFINE_integer('num_classes', None,
                       'Number of classes (required for pkummd_official).',
                       flag_values=flag_values)
  flags.DEFINE_string('out', None, 'Optional JSON file for the results.',
                      flag_values=flag_values)
  flags.mark_flags_as_required(['gt', 'pred'], flag_values=flag_values)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  try:
    result = evaluate_files(f.gt, f.pred, metric=f.metric,
                            iou_thresholds=[float(t) for t in f.iou],
                            num_classes=f.num_classes)
  except ValueError as e:  # bad flags or file contents: no traceback
    raise app.UsageError(str(e)) from e
  print(format_table(result))
  if f.out:
    out_dir = os.path.dirname(os.path.abspath(f.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(f.out, 'w') as fp:
      json.dump(result_to_json(result), fp, indent=2)


if __name__ == '__main__':
  define_flags()
  app.run(main)
