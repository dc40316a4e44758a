r"""Multi-seed study: methods x pretraining seeds x localization seeds, with 95% CIs.

  python -m skel_jax.study --config=configs/study.py --workdir=runs/study
  make study                                    # the same
  python -m skel_jax.study --config=configs/study.py:smoke --workdir=/tmp/study

One pretraining run per (method, pretraining seed), then one localization run
per (method, pretraining seed, localization seed, protocol); the localization
seed also draws the labelled subset, so every method sees the same labels for
the same seed; a protocol can have its own localization seeds
(``protocol_localization_seeds``). Each run ("cell") has its own workdir: a re-run skips finished
cells (``results.json`` / ``done.json`` present) and resumes unfinished ones
from their checkpoints. One progress line per cell.

Writes ``WORKDIR/results.json``::

  {"ci_method": ..., "rows": [{"method", "protocol", "label_fraction", "runs",
    "map_mean": {"mean", "ci95": [lo, hi]},
    "vs_video_moco": {"mean", "ci95"}, ...}, ...], "cells": [...]}

(mAP in percent; ``vs_video_moco`` is the paired difference of mean mAP to
video-level MoCo over matching seeds), ``results.md`` and ``results.png``.
"""

import json
import math
import os
import time

import numpy as np

from skel_jax import config_validation
from skel_jax import finetune
from skel_jax import input_pipeline
from skel_jax import pretrain

CI_METHOD = (
  'Student-t 95% interval over the runs of a row (pretraining seed '
  'x localization seed cells, treated as independent draws); '
  'vs_video_moco: the same interval over paired differences with '
  'the video-level MoCo run of the same seeds and protocol'
)

# Two-sided 97.5% quantiles of Student's t by degrees of freedom.
_T975 = {
  1: 12.706,
  2: 4.303,
  3: 3.182,
  4: 2.776,
  5: 2.571,
  6: 2.447,
  7: 2.365,
  8: 2.306,
  9: 2.262,
  10: 2.228,
  11: 2.201,
  12: 2.179,
  13: 2.160,
  14: 2.145,
  15: 2.131,
  16: 2.120,
  17: 2.110,
  18: 2.101,
  19: 2.093,
  20: 2.086,
  21: 2.080,
  22: 2.074,
  23: 2.069,
  24: 2.064,
  25: 2.060,
  26: 2.056,
  27: 2.052,
  28: 2.048,
  29: 2.045,
  30: 2.042,
}


def t_quantile(df):
  """97.5% quantile of Student's t (df > 30: 1.96 + 2.4 / df, within 0.3%)."""
  return _T975[df] if df in _T975 else 1.96 + 2.4 / df


def mean_ci(values):
  """{'mean', 'ci95': [lo, hi], 'sd'} of a sample (t interval)."""
  v = np.asarray(values, np.float64)
  m = float(v.mean())
  if len(v) < 2:
    return {'mean': m, 'ci95': [float('nan'), float('nan')], 'sd': 0.0}
  sd = float(v.std(ddof=1))
  half = t_quantile(len(v) - 1) * sd / math.sqrt(len(v))
  return {'mean': m, 'ci95': [m - half, m + half], 'sd': sd}


# ---------------------------------------------------------------------------
# Cells.
# ---------------------------------------------------------------------------
def pretrain_dir(workdir, method, seed):
  return os.path.join(workdir, 'pretrain', method, f'seed{seed}')


def localize_dir(workdir, method, p_seed, l_seed, protocol):
  return os.path.join(
    workdir, 'localize', method, f'p{p_seed}_l{l_seed}', protocol
  )


def localization_seeds(config, protocol):
  """A protocol's localization seeds: its own list where the config gives one
  (``protocol_localization_seeds``), else ``localization_seeds``."""
  own = config.protocol_localization_seeds
  return tuple(own.get(protocol, config.localization_seeds))


def pretrain_config(config, method, seed):
  c = config.pretrain_methods[method].copy_and_resolve_references()
  c.seed = seed
  return c


def localize_config(config, workdir, method, p_seed, l_seed, protocol):
  c = config.finetune.copy_and_resolve_references()
  c.seed = l_seed
  c.protocol = protocol
  c.label_fraction = config.label_fraction
  if protocol in config.protocol_lr:
    c.optimizer.lr = config.protocol_lr[protocol]
  if method == 'random_init':
    # The pretraining seed draws the random backbone (its "pretraining").
    c.init, c.pretrain_workdir = 'random', ''
    c.init_seed = 1000 * p_seed + l_seed
  else:
    c.init = 'pretrained'
    c.pretrain_workdir = pretrain_dir(workdir, method, p_seed)
  return c


def _done_marker(workdir):
  return os.path.join(workdir, 'done.json')


def _run_pretrain(config, workdir, method, seed):
  pdir = pretrain_dir(workdir, method, seed)
  if os.path.exists(_done_marker(pdir)):
    with open(_done_marker(pdir)) as f:
      return json.load(f), True
  c = pretrain_config(config, method, seed)
  _, state = pretrain.train(c, pdir)
  logged = _metric_lines(pdir)
  summary = {
    'first': logged[0],
    'final': logged[-1],
    'loss_global_trend': loss_trend(logged),
  }
  probe_path = os.path.join(pdir, 'probe.json')
  if os.path.exists(probe_path):
    with open(probe_path) as f:
      summary['probe'] = json.load(f)
  del state
  with open(_done_marker(pdir), 'w') as f:
    json.dump(summary, f, indent=2)
  return summary, False


def loss_trend(logged, key='loss_global'):
  """Is the global loss falling? Mean of ``key`` over the first window of
  logged steps once the queue is full (before that there are fewer negatives,
  so the loss is lower for no merit) and over the last window; a window is
  10% of the logged steps, at least 3. Logged values are single batches, so
  the study logs every step (configs/study.py)."""
  rows = [r for r in logged if key in r]
  full = [i for i, r in enumerate(rows) if r.get('diag/queue_fill', 1) >= 1]
  if not full:
    return None
  size = max(3, len(rows) // 10)
  start = rows[full[0] : full[0] + size]
  end = rows[-size:]
  first = float(np.mean([r[key] for r in start]))
  last = float(np.mean([r[key] for r in end]))
  return {
    'window_steps': size,
    'full_queue_start': [start[0]['step'], start[-1]['step'], first],
    'end': [end[0]['step'], end[-1]['step'], last],
    'falls': last < first,
  }


def _metric_lines(pdir):
  with open(os.path.join(pdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def _run_localize(config, workdir, method, p_seed, l_seed, protocol):
  ldir = localize_dir(workdir, method, p_seed, l_seed, protocol)
  path = os.path.join(ldir, 'results.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f), True
  c = localize_config(config, workdir, method, p_seed, l_seed, protocol)
  return finetune.train_and_evaluate(c, ldir), False


# ---------------------------------------------------------------------------
# Aggregation.
# ---------------------------------------------------------------------------
def aggregate(cells, methods, protocols, label_fraction):
  """Rows of results.json from the per-cell mean mAPs."""
  by_key = {
    (c['method'], c['protocol'], c['pretrain_seed'], c['localization_seed']): c[
      'map_mean'
    ]
    for c in cells
  }
  rows = []
  for protocol in protocols:
    for method in methods:
      seeds = sorted(
        (p, l) for (m, pr, p, l) in by_key if m == method and pr == protocol
      )
      if not seeds:
        continue
      values = [by_key[(method, protocol) + s] for s in seeds]
      row = {
        'method': method,
        'protocol': protocol,
        'label_fraction': label_fraction,
        'runs': len(values),
        'map_mean': mean_ci(values),
      }
      paired = [
        by_key[(method, protocol) + s] - by_key[('video_moco', protocol) + s]
        for s in seeds
        if ('video_moco', protocol) + s in by_key
      ]
      if method != 'video_moco' and paired:
        row['vs_video_moco'] = mean_ci(paired)
        row['vs_video_moco']['pairs'] = len(paired)
      rows.append(row)
  return rows


def _fmt_ci(stat, signed=False):
  lo, hi = stat['ci95']
  sign = '+' if signed else ''
  return f'{stat["mean"]:{sign}.1f} [{lo:{sign}.1f}, {hi:{sign}.1f}]'


def format_table(rows):
  lines = [
    '| protocol | method | runs | mean mAP [95% CI] | vs video MoCo [95% CI] |',
    '|---|---|---|---|---|',
  ]
  for r in rows:
    vs = _fmt_ci(r['vs_video_moco'], True) if 'vs_video_moco' in r else '-'
    lines.append(
      f'| {r["protocol"]} | {r["method"]} | {r["runs"]} | '
      f'{_fmt_ci(r["map_mean"])} | {vs} |'
    )
  return '\n'.join(lines)


def format_diagnostics(pretrain_summaries):
  """Per method: final pretraining diagnostics and probe, mean over seeds."""
  keys = (
    'loss_global',
    'loss_snippet',
    'diag/global_top1',
    'diag/snippet_top1',
    'diag/snippet_same_index',
    'diag/snippet_content_correct',
    'diag/snippet_var_index',
    'diag/snippet_var_video',
    'diag/uniform',
  )
  probe_keys = ('ridge_frame_acc', 'ridge_class_acc', 'var_time', 'var_label')
  head = (
    ['method', 'loss_global full-queue start -> end (falls)']
    + [k.split('/')[-1] for k in keys]
    + list(probe_keys)
  )
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for method, runs in pretrain_summaries.items():
    trends = [
      r['loss_global_trend'] for r in runs if r.get('loss_global_trend')
    ]
    cells = [method]
    if trends:
      start = np.mean([t['full_queue_start'][2] for t in trends])
      end = np.mean([t['end'][2] for t in trends])
      falls = sum(t['falls'] for t in trends)
      cells.append(f'{start:.3f} -> {end:.3f} ({falls}/{len(trends)})')
    else:
      cells.append('-')
    for k in keys:
      v = [r['final'][k] for r in runs if k in r['final']]
      cells.append(f'{np.mean(v):.3f}' if v else '-')
    for k in probe_keys:
      v = [r['probe'][k] for r in runs if 'probe' in r]
      cells.append(f'{np.mean(v):.3f}' if v else '-')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot_rows(path, rows):
  """Means with 95% intervals, one panel per protocol."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  protocols = list(dict.fromkeys(r['protocol'] for r in rows))
  fig, axes = plt.subplots(
    1,
    len(protocols),
    figsize=(3.6 * len(protocols), 3.4),
    sharey=True,
    squeeze=False,
  )
  for ax, protocol in zip(axes[0], protocols):
    sub = [r for r in rows if r['protocol'] == protocol]
    means = [r['map_mean']['mean'] for r in sub]
    err = np.array(
      [
        [m - r['map_mean']['ci95'][0], r['map_mean']['ci95'][1] - m]
        for m, r in zip(means, sub)
      ]
    ).T
    ax.errorbar(range(len(sub)), means, yerr=err, fmt='o', capsize=4)
    ax.set_xticks(range(len(sub)))
    ax.set_xticklabels([r['method'] for r in sub], rotation=30, ha='right')
    ax.set_title(f'{protocol} ({sub[0]["runs"]} runs)')
    ax.grid(axis='y', alpha=0.3)
  axes[0][0].set_ylabel('mean mAP@0.1:0.5 (%), 95% CI')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _write_report(config, workdir, cells, summaries, wall, reused, plot=False):
  rows = aggregate(
    cells, list(config.methods), config.protocols, config.label_fraction
  )
  table, diag = format_table(rows), format_diagnostics(summaries)
  out = {
    'ci_method': CI_METHOD,
    'rows': rows,
    'cells': cells,
    'pretraining': summaries,
    # Of this invocation: cells reused from an earlier one cost nothing here.
    'wall_seconds': round(wall, 1),
    'reused_runs': reused,
    'seeds': {
      'pretrain': list(config.pretrain_seeds),
      'localization': list(config.localization_seeds),
      'localization_by_protocol': {
        p: list(localization_seeds(config, p)) for p in config.protocols
      },
    },
  }
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(out, f, indent=2)
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(
      f'{table}\n\n{CI_METHOD}.\n\nPretraining diagnostics (mean over '
      f'seeds): the global loss averaged over the first window of steps '
      f'with a full queue and over the last window (runs in which it fell), '
      f'the other values at the last logged step, and the frozen-feature '
      f'probe:'
      f'\n\n{diag}\n\nwall time of this invocation: {wall:.0f} s '
      f'({reused} runs reused from an earlier one)\n'
    )
  if plot and rows:
    plot_rows(os.path.join(workdir, 'results.png'), rows)
  return dict(out, table=table, diagnostics_table=diag)


# ---------------------------------------------------------------------------
# Driver.
# ---------------------------------------------------------------------------
def run(config, workdir):
  config_validation.validate(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  input_pipeline.ensure_built(config.data)
  t_start = time.time()
  methods = list(config.methods)
  pretrained = [m for m in methods if m != 'random_init']
  n_pre = len(pretrained) * len(config.pretrain_seeds)
  seeds_of = {p: localization_seeds(config, p) for p in config.protocols}
  all_l_seeds = list(dict.fromkeys(s for p in seeds_of for s in seeds_of[p]))
  n_loc = (
    len(methods)
    * len(config.pretrain_seeds)
    * sum(len(s) for s in seeds_of.values())
  )
  done = n_reused = 0

  def progress(kind, name, seconds, reused, extra=''):
    nonlocal done, n_reused
    done += 1
    n_reused += reused
    state = 'reused' if reused else f'{seconds:.0f} s'
    print(
      f'[study {done}/{n_pre + n_loc}] {kind} {name}: {state}{extra} '
      f'(elapsed {time.time() - t_start:.0f} s)',
      flush=True,
    )

  summaries = {m: [] for m in pretrained}
  for method in pretrained:
    for seed in config.pretrain_seeds:
      t0 = time.time()
      summary, reused = _run_pretrain(config, workdir, method, seed)
      summaries[method].append(summary)
      probe = summary.get('probe', {})
      extra = (
        f'; probe var_time={probe["var_time"]:.2f} ridge_class_acc='
        f'{probe["ridge_class_acc"]:.2f}'
        if probe
        else ''
      )
      progress(
        'pretrain', f'{method} seed {seed}', time.time() - t0, reused, extra
      )

  cells = []
  for p_seed in config.pretrain_seeds:
    for l_seed in all_l_seeds:
      for method in methods:
        for protocol in config.protocols:
          if l_seed not in seeds_of[protocol]:
            continue
          t0 = time.time()
          result, reused = _run_localize(
            config, workdir, method, p_seed, l_seed, protocol
          )
          cells.append(
            {
              'method': method,
              'protocol': protocol,
              'pretrain_seed': p_seed,
              'localization_seed': l_seed,
              'map_mean': result['mean'],
              'map': {str(k): v for k, v in result['iou'].items()},
              'frame_accuracy': result['frame_accuracy'],
            }
          )
          progress(
            'localize',
            f'{method} {protocol} p{p_seed} l{l_seed}',
            time.time() - t0,
            reused,
            f'; mean mAP {result["mean"]:.1f}',
          )
          # Results so far after every cell: an interrupted study still
          # leaves a readable report.
          out = _write_report(
            config, workdir, cells, summaries, time.time() - t_start, n_reused
          )
  out = _write_report(
    config,
    workdir,
    cells,
    summaries,
    time.time() - t_start,
    n_reused,
    plot=True,
  )
  print(
    f'\n{out["table"]}\n\n{out["diagnostics_table"]}\n\n[study] wall '
    f'time {out["wall_seconds"]:.0f} s ({n_reused} of {n_pre + n_loc} runs '
    f'reused); results in {workdir}/results.json,'
    ' results.md, results.png',
    flush=True,
  )
  return out


if __name__ == '__main__':
  import runpy  # pylint: disable=g-import-not-at-top

  # The study's command line is the main program's (flags, one-line config
  # errors, --help listing the configs, quiet logs): run it as __main__.
  # (Importing skel_jax.main here would make main -> study -> main a cycle.)
  runpy.run_module('skel_jax.main', run_name='__main__', alter_sys=True)
