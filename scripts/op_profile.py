r"""Where one jitted AGCN finetune or pretraining step spends its time, per XLA op.

  python scripts/op_profile.py [--step=finetune] [--width=1] [--ft_batch=8] \
      [--pad_length=300] [--num_classes=4] [--persons=2] [--top=15] \
      [--out=profile.json]
  python scripts/op_profile.py --step=pretrain [--batch=16] [--clip_len=150] \
      [--persons=1] [--method=skeletonclr+snippet]
  python scripts/op_profile.py --step=pretrain \
      --config=configs/pretrain_synthetic.py[:video]   # a config's own step

Compiles the step at ``skel_jax.bench``'s shapes (the same as ``bench
--vs_torch --sections=finetune`` or ``--sections=pretrain``), times three
runs after a warm-up (median), traces one more
with ``jax.profiler`` and sums the trace's per-op events (XLA:CPU records one
per executed thunk) by kind: ``ynn_fusion`` (YNNPACK matmuls),
``copy_bitcast_fusion`` / ``transpose_copy_fusion`` (layout copies),
``convolution`` (Eigen), elementwise and reduction fusions. The largest single
ops are listed with their shape and the JAX operation they came from.
``--config`` profiles the pretraining step of a config file instead (its
model, batch, clip length and losses; ``--persons`` still sets the input).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import numpy as np

import configs
from skel_jax import bench
from skel_jax import finetune
from skel_jax import train_utils


def _hlo_lines(hlo_text):
  """HLO instruction name -> its line (first definition)."""
  lines = {}
  for line in hlo_text.split('\n'):
    m = re.match(r'\s*(?:ROOT )?%([\w.\-]+) = ', line)
    if m:
      lines.setdefault(m.group(1), line.strip())
  return lines


def _op_events(trace_dir):
  path = sorted(
    glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
  )[-1]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  # Per-op events only: not the executor's or Python's own spans.
  return [
    (e['name'], e.get('dur', 0) / 1e3)
    for e in events
    if e.get('ph') == 'X' and not e['name'].startswith(('ThunkExecutor', '$'))
  ]


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--step', default='finetune', choices=['finetune', 'pretrain'])
  p.add_argument('--width', type=float, default=1.0)
  p.add_argument('--ft_batch', type=int, default=8)
  p.add_argument('--pad_length', type=int, default=300)
  p.add_argument('--num_classes', type=int, default=4)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--clip_len', type=int, default=150)
  p.add_argument('--method', default='skeletonclr+snippet')
  p.add_argument('--config', default='', help='pretraining config file')
  p.add_argument(
    '--persons', type=int, default=0, help='default: 2 finetune, 1 pretrain'
  )
  p.add_argument('--top', type=int, default=15)
  p.add_argument('--out', default='')
  a = p.parse_args()
  if a.config and a.step != 'pretrain':
    p.error('--config profiles a pretraining config: add --step=pretrain')

  persons = a.persons or (2 if a.step == 'finetune' else 1)
  opts = bench.Options(
    width=a.width,
    ft_batch=a.ft_batch,
    pad_length=a.pad_length,
    num_classes=a.num_classes,
    batch=a.batch,
    clip_len=a.clip_len,
    persons=persons,
  )
  mesh = train_utils.make_mesh(jax.devices()[:1])
  rng = np.random.default_rng(0)
  if a.step == 'finetune':
    cfg = bench.finetune_config(opts, 'agcn', 'finetune')
    schedule, tx, graphdef, state = bench._finetune_setup(
      cfg, a.num_classes, mesh
    )
    x = bench._skeletons(rng, cfg.batch_size, persons, cfg.data.pad_length)
    _, batch = bench._finetune_batch(cfg, a.num_classes, x, rng, mesh)
    step = finetune.make_train_step(graphdef, tx, 'finetune', schedule, mesh)
  elif a.config:
    cfg = configs.load(a.config)
    _, _, state, step, x, batch = bench._pretrain_setup(cfg, opts, mesh, rng)
  else:
    cfg = bench.pretrain_config(opts, 'agcn', a.method)
    _, _, state, step, x, batch = bench._pretrain_setup(cfg, opts, mesh, rng)
  compiled = step.lower(state, batch).compile()
  lines = _hlo_lines(compiled.as_text())
  state, _ = compiled(state, batch)  # warm-up
  times = []
  for _ in range(3):
    t0 = time.perf_counter()
    state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  step_s = float(np.median(times))  # this VM's timings are noisy
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    jax.profiler.stop_trace()
    events = _op_events(trace_dir)

  by_kind = collections.Counter()
  for name, ms in events:
    by_kind[re.sub(r'[.\d]+$', '', name)] += ms
  total = sum(by_kind.values())
  top = []
  for name, ms in sorted(events, key=lambda e: -e[1])[: a.top]:
    line = lines.get(name, '')
    shape = line.split(' = ', 1)[1].split(' ', 1)[0] if line else '?'
    origin = re.search(r'op_name="([^"]*)"', line)
    top.append(
      {
        'op': name,
        'ms': round(ms, 1),
        'shape': shape,
        'from': origin.group(1) if origin else '',
      }
    )
  report = {
    'step': a.step,
    'shape': ' x '.join(str(d) for d in x.shape[:3]),
    'width': a.width,
    'step_s': round(step_s, 3),
    'op_ms_total': round(total, 1),
    'by_kind_ms': {k: round(v, 1) for k, v in by_kind.most_common()},
    'top_ops': top,
    'env': bench.environment(),
  }
  print(f'{a.step} step {step_s:.2f} s; per-op time {total:.0f} ms')
  for kind, ms in by_kind.most_common(10):
    print(f'  {ms:8.0f} ms {100 * ms / total:5.1f}%  {kind}')
  print('largest ops:')
  for r in top:
    print(
      f'  {r["ms"]:7.1f} ms  {r["op"]:26s} {r["shape"]:24s} {r["from"][-60:]}'
    )
  if a.out:
    with open(a.out, 'w') as f:
      json.dump(report, f, indent=1)


if __name__ == '__main__':
  main()
