r"""Standalone localisation evaluator on ActivityNet-style JSON files.

Usage:
  python -m skel_jax.evaluate --gt=GT.json --pred=PRED.json \
      [--metric=exact] [--iou=0.1,0.2,0.3,0.4,0.5] [--num_classes=N] \
      [--out=RESULT.json]

File layouts and the checks on every entry: ``skel_jax.activitynet``
(mismatched videos or labels are errors under ``--strict``).

Labels may be class names or integers. They are mapped to indices as the
sorted unique GT labels followed by the sorted prediction-only labels (those
can never be TPs, but they keep their own index). Output keys use the labels
as they appear in the JSON. For 'pkummd_official' the mAP denominator is
``--num_classes``; indices beyond the labels seen in the files have no name
and are left out of ``per_class``.

The library functions (``to_activitynet``, ``save_activitynet``,
``load_activitynet``, ``evaluate_files``) are in ``skel_jax.activitynet``:
training code exports and scores predictions without the command line.
"""

import json
import os
import sys

from absl import app
from absl import flags

from skel_jax import activitynet
from skel_jax import metrics


def define_flags(flag_values=flags.FLAGS) -> None:
  """Defines the CLI flags.

  Called only when run as a script, so importing this module never defines
  global flags that could clash (the library is ``skel_jax.activitynet``).
  """
  flags.DEFINE_string(
    'gt',
    None,
    'Ground-truth JSON ("database" layout).',
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    'pred', None, 'Prediction JSON ("results" layout).', flag_values=flag_values
  )
  flags.DEFINE_enum(
    'metric',
    'exact',
    list(metrics.METRICS),
    'mAP convention.',
    flag_values=flag_values,
  )
  flags.DEFINE_list(
    'iou',
    [str(t) for t in metrics.DEFAULT_IOU_THRESHOLDS],
    'Comma-separated temporal IoU thresholds.',
    flag_values=flag_values,
  )
  flags.DEFINE_integer(
    'num_classes',
    None,
    'Number of classes (required for pkummd_official).',
    flag_values=flag_values,
  )
  flags.DEFINE_string(
    'out',
    None,
    'Optional JSON file for the results (output).',
    flag_values=flag_values,
  )
  flags.DEFINE_bool(
    'strict',
    False,
    'Fail (instead of warning) when '
    'prediction videos or labels do not match the ground '
    'truth.',
    flag_values=flag_values,
  )
  flags.mark_flags_as_required(['gt', 'pred'], flag_values=flag_values)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from skel_jax import cli  # pylint: disable=g-import-not-at-top

  cli.apply_verbosity()
  f = flags.FLAGS
  try:
    result = activitynet.evaluate_files(
      f.gt,
      f.pred,
      metric=f.metric,
      iou_thresholds=[float(t) for t in f.iou],
      num_classes=f.num_classes,
      strict=f.strict,
    )
  except ValueError as e:  # bad flags or file contents: one line
    print(f'evaluate: error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)
  for warning in result['warnings']:
    print(f'evaluate: warning: {warning}', file=sys.stderr, flush=True)
  print(activitynet.format_table(result))
  if f.out:
    out_dir = os.path.dirname(os.path.abspath(f.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(f.out, 'w') as fp:
      json.dump(activitynet.result_to_json(result), fp, indent=2)


if __name__ == '__main__':
  from skel_jax import cli  # pylint: disable=g-import-not-at-top

  define_flags()
  cli.extend_help(only=False)
  app.run(main)
