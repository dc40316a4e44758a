"""The embedded default job (``make demo``): build -> pretrain -> localize -> mAP.

Compares, with the same budget, (a) random init, (b) video-level MoCo
(snippet_weight = 0) and (c) snippet MoCo, each followed by the same U-fusion
head under the linear probe and full finetuning with a fraction of the labels.
``configs/demo.py:bases`` compares every base method with and without the
snippet loss (``PRETRAINED``) the same way.
Writes every stage's workdir under the demo workdir, plus ``results.json``,
``results.md`` and ``timelines.png`` comparing the methods on val sequences.
"""

import json
import os
import time

import numpy as np

from skel_jax import config_validation
from skel_jax import finetune
from skel_jax import input_pipeline
from skel_jax import plotting
from skel_jax import pretrain

# Pretrained methods -> (base, with snippet loss). 'random_init' has none.
PRETRAINED = {
  'video_moco': ('skeletonclr', False),
  'snippet_moco': ('skeletonclr', True),
  'aimclr': ('aimclr', False),
  'aimclr_snippet': ('aimclr', True),
  'rvtclr': ('rvtclr', False),
  'rvtclr_snippet': ('rvtclr', True),
}
METHODS = ('random_init',) + tuple(PRETRAINED)


def _pretrain_config(config, method):
  """``config.pretrain_methods[method]`` when the demo config builds one per
  method (other bases), else ``config.pretrain`` with the method's snippet
  weight (the video-level baseline sets it to 0)."""
  if method in config.get('pretrain_methods', {}):
    c = config.pretrain_methods[method].copy_and_resolve_references()
  else:
    c = config.pretrain.copy_and_resolve_references()
  # One dataset for every method; each keeps its window length (RVTCLR's
  # tempo views need twice the frames).
  clip_len = c.data.clip_len
  c.data = config.data.copy_and_resolve_references()
  c.data.clip_len = clip_len
  base, snippet = PRETRAINED[method]
  if c.pretrain.base != base:
    raise ValueError(
      f'demo method {method!r} needs base {base!r}, its '
      f'pretraining config has {c.pretrain.base!r}'
    )
  if not snippet:
    c.pretrain.snippet_weight = 0.0
  return c


def _finetune_config(config, method, protocol, pretrain_dir):
  c = config.finetune.copy_and_resolve_references()
  c.data = config.data
  c.protocol = protocol
  c.label_fraction = config.label_fraction
  if protocol == 'linear':
    c.optimizer.lr = config.linear_lr
  if method == 'random_init':
    c.init, c.pretrain_workdir = 'random', ''
  else:
    c.init, c.pretrain_workdir = 'pretrained', pretrain_dir
  return c


def _done(workdir):
  return os.path.exists(os.path.join(workdir, 'results.json'))


def format_table(rows, thresholds):
  head = (
    '| method | protocol | '
    + ' | '.join(f'mAP@{t}' for t in thresholds)
    + ' | mean | frame acc |'
  )
  lines = [head, '|' + '---|' * (len(thresholds) + 4)]
  for r in rows:
    vals = ' | '.join(f'{r["map"][str(t)]:.1f}' for t in thresholds)
    lines.append(
      f'| {r["method"]} | {r["protocol"]} | {vals} | '
      f'{r["map"]["mean"]:.1f} | {r["frame_accuracy"]:.3f} |'
    )
  return '\n'.join(lines)


def run(config, workdir):
  config_validation.validate(config, workdir)
  for method in config.methods:
    config_validation.one_of('methods', method, METHODS)
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  input_pipeline.ensure_built(config.data)
  stage_times = {}

  pretrain_dirs = {}
  for method in config.methods:
    if method == 'random_init':
      continue
    pdir = os.path.join(workdir, f'pretrain_{method}')
    pretrain_dirs[method] = pdir
    t0 = time.time()
    pretrain.train(_pretrain_config(config, method), pdir)
    stage_times[f'pretrain_{method}'] = round(time.time() - t0, 1)

  rows = []
  for method in config.methods:
    for protocol in config.protocols:
      fdir = os.path.join(workdir, f'{method}_{protocol}')
      t0 = time.time()
      if _done(fdir):  # a re-run reuses finished stages
        with open(os.path.join(fdir, 'results.json')) as f:
          result = json.load(f)
      else:
        result = finetune.train_and_evaluate(
          _finetune_config(
            config, method, protocol, pretrain_dirs.get(method, '')
          ),
          fdir,
        )
      stage_times[f'{method}_{protocol}'] = round(time.time() - t0, 1)
      rows.append(
        {
          'method': method,
          'protocol': protocol,
          'label_fraction': config.label_fraction,
          'map': {
            **{str(k): v for k, v in result['iou'].items()},
            'mean': result['mean'],
          },
          'frame_accuracy': result['frame_accuracy'],
          'workdir': fdir,
        }
      )

  thresholds = [str(t) for t in config.finetune.eval.iou_thresholds]
  table = format_table(rows, thresholds)
  wall = round(time.time() - t_start, 1)
  summary = {
    'rows': rows,
    'stage_seconds': stage_times,
    'wall_seconds': wall,
    'dataset': f'{config.data.name}/{config.data.config}',
    'budget': {
      'pretrain_steps': config.pretrain.num_steps,
      'pretrain_batch': config.pretrain.batch_size,
      'finetune_epochs': config.finetune.num_epochs,
    },
  }
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(table + f'\n\nwall time: {wall:.0f} s\n')
  _plot_comparison(config, workdir)
  print(
    '\n' + table + f'\n\n[demo] wall time {wall:.0f} s; results in '
    f'{workdir}/results.json, timelines in {workdir}/timelines.png\n'
    '[demo] one seed per method: a single run swings by 7-16 mAP, so it '
    'cannot rank methods; `make study` gives means over seeds with 95% '
    'intervals',
    flush=True,
  )
  return summary


def _plot_comparison(config, workdir):
  """GT vs each method's finetuned predictions on the first val sequences."""
  names = input_pipeline.class_names(config.data)
  num_classes = len(names) - 1
  per_method = {}
  for method in config.methods:
    path = os.path.join(workdir, f'{method}_finetune', 'frame_predictions.npz')
    if os.path.exists(path):
      per_method[method] = np.load(path)
  if not per_method:
    return
  rows = []
  first = next(iter(per_method.values()))
  ids = [k for k in first.files if k.endswith('/labels')]
  for key in ids[: config.num_plot_sequences]:
    sid = key[: -len('/labels')]
    # The ground truth once per video, then one row per method.
    rows.append(
      {
        'name': sid,
        'gt': first[key],
        'methods': [
          {'name': method, 'pred': np.argmax(data[f'{sid}/probs'], -1)}
          for method, data in per_method.items()
          if f'{sid}/probs' in data.files
        ],
      }
    )
  plotting.plot_timelines(
    os.path.join(workdir, 'timelines.png'), rows, names, num_classes
  )
