r"""Throughput and compile-time benchmark: jitted steps and input pipelines.

  python -m skel_jax.bench --quick --out=runs/bench/quick.json  # CPU-sized
  python -m skel_jax.bench --out=runs/bench/full.json           # paper width
  python -m skel_jax.bench --backbones=agcn --methods=aimclr+snippet \
      --sections=pretrain --repeats=2 --warmup=1 --steps=1       # one row

On a 2-core CPU one full-width step at the released batch (128) takes minutes
(it did not finish in 5); --quick, or --batch=8 at width 1, is what fits.

Measured (each with untimed warm-up calls, then ``repeats`` timed repeats of
``steps`` calls each, closed by ``jax.block_until_ready``; median and IQR of
the per-call time):

1. ``pretrain.train_step`` of each method: a base (skeletonclr, aimclr,
   rvtclr) alone or with the snippet loss (``aimclr+snippet``: lambda 1.5),
   jitted exactly as ``pretrain.train`` does (state shardings, donation), on
   random batches already on device, so the input pipeline is excluded.
   ``--dtype=bfloat16`` times the bf16-compute step, ``--fsdp=N`` the
   parameter-sharded mesh.
2. ``finetune.train_step`` under the full-finetune and linear protocols.
3. ``finetune.predict_step`` on long (default 1000-frame) sequences.
4. The grain input pipelines (pretraining windows, padded localization
   batches) on the synthetic ``smoke`` dataset, host side only.
5. Compile time of every jitted function: first call minus the steady-state
   median. The persistent compilation cache is switched off by the CLI so
   this is a real compile (``env.compilation_cache`` records the setting).
6. ``--vs_torch`` (needs ``pip install -e .[torch]``): instead of 1 and 2,
   the JAX step and its PyTorch peer (``skel_jax.torch_peer``) side by side
   at the same shapes, timed alternately in one process, after a check that
   both give the same outputs, losses, gradients and updates from the same
   weights and views; with each step's achieved FLOP/s (FLOPs from XLA's
   cost analysis of the compiled JAX step) and the measured fp32 matmul
   peak. AGCN with skeletonclr[+snippet] and the finetune protocol.

Writes one JSON file (rows + environment + every config used) and prints a
table. Model inputs are random skeletons of ``persons`` people x 25 joints.
"""

import dataclasses
import datetime
import inspect
import json
import os
import platform
import sys
import tempfile
import time

import jax
import numpy as np

from skel_jax import bases
from skel_jax import config_defaults
from skel_jax import config_validation
from skel_jax import finetune
from skel_jax import graph
from skel_jax import input_pipeline
from skel_jax import models
from skel_jax import optim
from skel_jax import pretrain
from skel_jax import train_utils

SECTIONS = ('pretrain', 'finetune', 'inference', 'pipeline')
# Pretraining methods: each base alone and with the snippet loss (lambda 1.5).
METHODS = tuple(m for base in bases.REGISTRY for m in (base, base + '+snippet'))
# Protocols with a training step (finetune's 'knn' has none).
TRAIN_PROTOCOLS = ('finetune', 'linear')


@dataclasses.dataclass
class Options:
  """Benchmark sizes. Defaults are the released (full-width) settings."""

  backbones: tuple = ('agcn', 'stgcn')
  methods: tuple = METHODS
  protocols: tuple = TRAIN_PROTOCOLS
  sections: tuple = SECTIONS
  width: float = 1.0
  batch: int = 128  # pretraining global batch (also pipeline batch)
  clip_len: int = 128  # pretraining window (frames)
  persons: int = 2  # M of the random model inputs (NTU / PKU-MMD: 2)
  queue_size: int = 32768  # rounded down to a multiple of ``batch``
  num_snippets: int = 0  # 0 = min(config default, backbone time steps)
  ft_batch: int = 8  # localization batch
  pad_length: int = 320  # localization sequence length
  head_dim: int = 512
  num_classes: int = 10  # localization classes (synthetic benchmark: 10)
  infer_len: int = 1000  # frames per inference sequence
  infer_batch: int = 8
  repeats: int = 5
  warmup: int = 2  # untimed calls, the first one compiles
  steps: int = 5  # calls per timed repeat
  # vs_torch: untimed calls opening each timed block (time_alternating).
  settle: int = 1
  pipeline_batches: int = 20
  data_dir: str = ''  # '' = a fresh temporary directory
  seed: int = 0
  dtype: str = 'float32'  # pretraining compute dtype (params stay float32)
  fsdp: int = 1  # parameter-sharding mesh axis (1 = data parallel)
  vs_torch: bool = False  # side by side with the PyTorch peer (section 6)
  torch_threads: int = 0  # torch's intra-op threads; 0 = every core


def quick_options(**overrides):
  """CPU-sized settings: the demo's narrow AGCN on 64-frame windows."""
  base = dict(
    width=0.125,
    batch=16,
    clip_len=64,
    persons=1,
    queue_size=4096,
    head_dim=64,
    repeats=3,
    warmup=1,
    steps=2,
    pipeline_batches=8,
  )
  base.update(overrides)
  return Options(**base)


# ---------------------------------------------------------------------------
# Configs (validated like a real run, so the benchmark runs what training runs).
# ---------------------------------------------------------------------------
def backbone_steps(backbone, clip_len):
  """Backbone output length of a clip."""
  return models.BACKBONES[backbone].time_steps(clip_len)


def _model(cfg, opts, backbone, frames=None):
  cfg.model.backbone.name = backbone
  cfg.model.backbone.width = float(opts.width)
  cfg.model.head_dim = opts.head_dim
  cfg.model.num_classes = opts.num_classes
  if 'num_persons' in cfg.data:  # recorded with the config, as a real run
    cfg.data.num_persons = opts.persons
  # The released 19 snippets exceed the 16 AGCN steps of a 128-frame clip.
  cfg.model.num_snippets = opts.num_snippets or min(
    cfg.model.num_snippets, backbone_steps(backbone, frames or opts.clip_len)
  )


def pretrain_config(opts, backbone, method):
  base, snippet = method.split('+')[0], method.endswith('+snippet')
  cfg = config_defaults.pretrain_config()
  config_defaults.set_base(cfg, base)
  # Frames of the query/key views (RVTCLR's tempo views keep half).
  frames = bases.get(base).view_frames(opts.clip_len, cfg.pretrain)
  _model(cfg, opts, backbone, frames)
  cfg.seed = opts.seed
  cfg.fsdp = opts.fsdp
  cfg.batch_size = opts.batch
  cfg.data.clip_len = opts.clip_len
  cfg.pretrain.snippet_weight = 1.5 if snippet else 0.0
  cfg.pretrain.compute_dtype = opts.dtype
  # Each step enqueues one global batch: queues must hold whole batches.
  queue = max(opts.batch, opts.queue_size // opts.batch * opts.batch)
  cfg.pretrain.queue_size = queue
  cfg.pretrain.snippet_queue_size = queue
  config_validation.validate(cfg)
  return cfg


def finetune_config(opts, backbone, protocol):
  cfg = config_defaults.finetune_config()
  _model(cfg, opts, backbone)
  cfg.seed = opts.seed
  cfg.protocol = protocol
  cfg.init = 'random'  # no pretraining workdir: weights do not change speed
  cfg.batch_size = opts.ft_batch
  cfg.data.pad_length = opts.pad_length
  cfg.eval.batch_size = opts.infer_batch
  config_validation.validate(cfg)
  return cfg


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------
def _summary(first_s, times):
  """Median / IQR of per-call times; compile = first call minus steady state."""
  q25, med, q75 = (float(v) for v in np.percentile(times, [25, 50, 75]))
  return {
    'median_s': med,
    'iqr_s': q75 - q25,
    'q25_s': q25,
    'q75_s': q75,
    'times_s': [float(t) for t in times],
    'first_call_s': float(first_s),
    'compile_s': max(0.0, float(first_s) - med),
  }


def time_calls(call, *, warmup, repeats, steps):
  """Times ``call`` (returns arrays); the first of ``warmup`` calls compiles."""
  t0 = time.perf_counter()
  jax.block_until_ready(call())
  first = time.perf_counter() - t0
  for _ in range(max(1, warmup) - 1):
    jax.block_until_ready(call())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = None
    for _ in range(steps):
      out = call()
    # Dispatch is asynchronous: only the last result needs waiting on, and
    # each call depends on the previous state, so all of them are included.
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / steps)
  return _summary(first, times)


def _skeletons(rng, batch, persons, length):
  return rng.normal(
    0.0, 0.3, (batch, persons, length, graph.NUM_JOINTS, 3)
  ).astype(np.float32)


def _check_divisible(name, value):
  n = jax.device_count()
  if value % n:
    raise ValueError(f'{name}={value} must be divisible by the {n} devices')


class _Stepper:
  """Feeds a donated state through a jitted step, one call per ``__call__``."""

  def __init__(self, step_fn, state, batch):
    self.step_fn, self.state, self.batch = step_fn, state, batch

  def __call__(self):
    self.state, metrics = self.step_fn(self.state, self.batch)
    return self.state, metrics


# ---------------------------------------------------------------------------
# Sections.
# ---------------------------------------------------------------------------
def _pretrain_setup(cfg, opts, mesh, rng):
  """As pretrain.train: schedule from an epoch size, optimizer, sharded
  state, a jitted step donating the state, and a random batch on device.
  Bases that mine compute their top-k masks every step (mining only switches
  them on), so the timing holds before and after the mining epoch."""
  schedule, _, _ = optim.epoch_schedule(
    cfg, 100 * cfg.batch_size, drop_last=True
  )
  tx = optim.make_optimizer(cfg.optimizer, schedule)
  graphdef, state = pretrain.init_state(cfg, tx)
  state_sh = train_utils.state_shardings(state, mesh)
  state = jax.device_put(state, state_sh)
  step_fn = pretrain.make_train_step(
    cfg, graphdef, tx, schedule, mesh=mesh, state_shardings=state_sh
  )
  x = _skeletons(rng, cfg.batch_size, opts.persons, cfg.data.clip_len)
  batch = jax.device_put(
    {'x': x, 'index': np.arange(cfg.batch_size, dtype=np.int32)},
    train_utils.data_sharding(mesh),
  )
  return schedule, graphdef, state, step_fn, x, batch


def bench_pretrain(opts, backbone, method, mesh, rng):
  cfg = pretrain_config(opts, backbone, method)
  _, _, state, step_fn, x, batch = _pretrain_setup(cfg, opts, mesh, rng)
  stats = time_calls(
    _Stepper(step_fn, state, batch),
    warmup=opts.warmup,
    repeats=opts.repeats,
    steps=opts.steps,
  )
  row = {
    'name': 'pretrain_step',
    'backbone': backbone,
    'method': method,
    'dtype': opts.dtype,
    'fsdp': opts.fsdp,
    'batch': cfg.batch_size,
    'shape': list(x.shape),
    **stats,
    'steps_per_s': 1.0 / stats['median_s'],
    'throughput': cfg.batch_size / stats['median_s'],
    'unit': 'samples/s',
  }
  return row, cfg


def _finetune_setup(cfg, num_classes, mesh):
  """Schedule, optimizer and a replicated fresh localizer state."""
  schedule = optim.warmup_step_schedule(cfg.optimizer.lr, 10, [])
  tx = optim.make_optimizer(cfg.optimizer, schedule)
  graphdef, state = finetune.initial_state(
    cfg, tx, num_classes, restore_backbone=False
  )
  return (
    schedule,
    tx,
    graphdef,
    jax.device_put(state, train_utils.replicated(mesh)),
  )


def _finetune_batch(cfg, num_classes, x, rng, mesh):
  """Random frame labels for ``x`` (the last quarter padded, -1) and the
  batch on device."""
  labels = rng.integers(
    0, num_classes + 1, (cfg.batch_size, cfg.data.pad_length)
  )
  labels[:, -cfg.data.pad_length // 4 :] = -1  # some padded frames
  batch = jax.device_put(
    {'x': x, 'labels': labels.astype(np.int32)}, train_utils.data_sharding(mesh)
  )
  return labels, batch


def bench_finetune(
  opts, backbone, protocol, mesh, rng, with_inference, with_train=True
):
  """Finetune-step row (``with_train``, when selected), plus the inference
  row when ``with_inference``."""
  cfg = finetune_config(opts, backbone, protocol)
  k = opts.num_classes
  schedule, tx, graphdef, state = _finetune_setup(cfg, k, mesh)
  rows = []
  x = _skeletons(rng, cfg.batch_size, opts.persons, cfg.data.pad_length)
  if with_train and protocol in opts.protocols and 'finetune' in opts.sections:
    labels, batch = _finetune_batch(cfg, k, x, rng, mesh)
    step_fn = finetune.make_train_step(graphdef, tx, protocol, schedule, mesh)
    stepper = _Stepper(step_fn, state, batch)
    stats = time_calls(
      stepper, warmup=opts.warmup, repeats=opts.repeats, steps=opts.steps
    )
    state = stepper.state
    rows.append(
      {
        'name': 'finetune_step',
        'backbone': backbone,
        'method': protocol,
        'batch': cfg.batch_size,
        'shape': list(x.shape),
        **stats,
        'steps_per_s': 1.0 / stats['median_s'],
        'throughput': cfg.batch_size / stats['median_s'],
        'unit': 'samples/s',
      }
    )
  if with_inference:
    xi = jax.device_put(
      _skeletons(rng, opts.infer_batch, opts.persons, opts.infer_len),
      train_utils.data_sharding(mesh),
    )
    predict_fn = finetune.make_predict_step(graphdef, protocol, mesh)
    stats = time_calls(
      lambda: predict_fn(state, xi),
      warmup=opts.warmup,
      repeats=opts.repeats,
      steps=opts.steps,
    )
    frames = opts.infer_batch * opts.infer_len
    rows.append(
      {
        'name': 'predict_step',
        'backbone': backbone,
        'method': protocol,
        'batch': opts.infer_batch,
        'shape': list(xi.shape),
        **stats,
        'steps_per_s': 1.0 / stats['median_s'],
        'throughput': frames / stats['median_s'],
        'unit': 'frames/s',
      }
    )
  return rows, cfg


def _time_iterator(it, opts):
  """Per-batch time of a prefetching iterator (host only, nothing on device)."""
  t0 = time.perf_counter()
  x = next(it)['x']
  first = time.perf_counter() - t0  # thread start-up + first batch
  batch = x.shape[0]
  # Drain what the prefetch threads produced meanwhile: after that an
  # instant consumer waits on the producers, so the timing is their rate.
  prefetch = (
    inspect.signature(input_pipeline.iterate).parameters['prefetch'].default
  )
  for _ in range(2 * prefetch + max(1, opts.warmup) - 1):
    next(it)
  times = []
  for _ in range(opts.repeats):
    t0 = time.perf_counter()
    for _ in range(opts.pipeline_batches):
      next(it)
    times.append((time.perf_counter() - t0) / opts.pipeline_batches)
  stats = _summary(first, times)
  # Not a compile: the start-up cost of the first batch.
  stats['startup_s'] = stats.pop('compile_s')
  stats['compile_s'] = None
  stats['steps_per_s'] = 1.0 / stats['median_s']
  stats['throughput'] = batch / stats['median_s']
  stats['unit'] = 'samples/s'
  stats['shape'] = list(x.shape)
  return stats


def bench_pipeline(opts, data_dir):
  """Host-side grain pipelines on synthetic_skeleton/smoke (no device work)."""
  data_cfg = config_defaults.data_config(
    'synthetic_skeleton', 'smoke', dir=data_dir
  )
  data_cfg.clip_len = opts.clip_len
  data_cfg.pad_length = opts.pad_length
  t0 = time.perf_counter()
  input_pipeline.ensure_built(data_cfg)
  build_s = time.perf_counter() - t0
  rows = []
  ds, _ = input_pipeline.pretrain_dataset(
    data_cfg, data_cfg.pretrain_split, global_batch=opts.batch, seed=opts.seed
  )
  rows.append(
    {
      'name': 'pretrain_pipeline',
      'backbone': '-',
      'method': 'synthetic/smoke',
      'batch': opts.batch,
      **_time_iterator(input_pipeline.iterate(ds, 0), opts),
    }
  )
  ds, _ = input_pipeline.finetune_dataset(
    data_cfg,
    data_cfg.train_split,
    global_batch=opts.ft_batch,
    label_fraction=1.0,
    seed=opts.seed,
  )
  rows.append(
    {
      'name': 'finetune_pipeline',
      'backbone': '-',
      'method': 'synthetic/smoke',
      'batch': opts.ft_batch,
      **_time_iterator(input_pipeline.iterate(ds, 0), opts),
    }
  )
  return rows, {'data_config': data_cfg.to_dict(), 'build_s': build_s}


# ---------------------------------------------------------------------------
# Side by side with the PyTorch peer (--vs_torch).
# ---------------------------------------------------------------------------
# What the peer implements (skel_jax.torch_peer); other selections are skipped.
TORCH_BACKBONES = ('agcn',)
TORCH_METHODS = ('skeletonclr', 'skeletonclr+snippet')
TORCH_PROTOCOLS = ('finetune',)
FLOPS_SOURCE = (
  "XLA cost_analysis()['flops'] of the compiled JAX step: every HLO op of "
  'forward, backward, optimizer and queues (dot/conv: 2 per multiply-add, '
  'elementwise and reductions: 1 per element; transcendentals not '
  'included), counted once and used for both steps'
)


class TorchMissing(RuntimeError):
  pass


def import_torch_peer(threads=0):
  """skel_jax.torch_peer, with torch using ``threads`` (0: every core)."""
  try:
    import torch
  except ImportError:
    raise TorchMissing(
      '--vs_torch needs PyTorch: pip install -e .[torch]'
    ) from None
  from skel_jax import torch_peer

  torch.set_num_threads(threads or os.cpu_count())
  return torch_peer


def time_alternating(calls, *, warmup, repeats, steps, settle=1):
  """Times each of ``calls`` ({name: fn}) in turns: after ``warmup`` untimed
  rounds, each repeat times ``steps`` calls of one, then of the next (the
  order flips every repeat, so drift falls on both). JAX results are waited
  on; torch on CPU returns when done.

  Each block opens with ``settle`` untimed calls. The first JAX step after a
  torch step takes 0.9-1.9 s longer than the next one at the width-1 shapes
  (2.1-3.5 s steps), all of it system time: the kernel finds pages for
  JAX's buffers in memory torch has just freed. torch's own steps do not
  change with their position. A training loop, where every step follows one
  of its own kind, never pays this; with ``settle`` = 0 it is timed
  (docs/bench/vs_torch.md has both).
  """
  for _ in range(warmup):
    for fn in calls.values():
      jax.block_until_ready(fn())
  times = {name: [] for name in calls}
  order = list(calls)
  for r in range(repeats):
    for name in order if r % 2 == 0 else order[::-1]:
      for _ in range(settle):
        jax.block_until_ready(calls[name]())
      t0 = time.perf_counter()
      out = None
      for _ in range(steps):
        out = calls[name]()
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - t0) / steps)
  out = {}
  for name, ts in times.items():
    q25, med, q75 = (float(v) for v in np.percentile(ts, [25, 50, 75]))
    out[name] = {
      'median_s': med,
      'iqr_s': q75 - q25,
      'q25_s': q25,
      'q75_s': q75,
      'times_s': [float(t) for t in ts],
    }
  return out


def matmul_peak(peer, n=2048, repeats=5):
  """fp32 GFLOP/s of an n x n x n matmul in JAX and in torch (best of
  ``repeats``): the machine's practical peak, measured in this run."""
  a = jax.device_put(
    np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
  )
  mm = jax.jit(lambda x: x @ x)
  jax.block_until_ready(mm(a))
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(mm(a))
    best = min(best, time.perf_counter() - t0)
  jax_gflops = 2 * n**3 / best / 1e9
  torch_gflops = peer.matmul_gflops(n, repeats)
  return {
    'n': n,
    'jax_gflops_per_s': jax_gflops,
    'torch_gflops_per_s': torch_gflops,
    'peak_gflops_per_s': max(jax_gflops, torch_gflops),
  }


def _aot_compile(step_fn, *args):
  """(compiled step, compile seconds, XLA's FLOPs of one call)."""
  t0 = time.perf_counter()
  compiled = step_fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0]
  return compiled, compile_s, float(cost['flops'])


def _equivalence_brief(summary):
  """The check's summary without the per-tensor items (kept small)."""
  keep = ('ok', 'failed', 'max_abs', 'max_rel', 'compared', 'tolerance')
  out = {k: summary[k] for k in keep}
  out['worst'] = summary['worst']
  out['excluded_zero_gradient'] = len(summary['excluded_zero_gradient'])
  if 'pointers_equal' in summary:
    out['pointers_equal'] = summary['pointers_equal']
  return out


def _time_vs_torch(opts, name, method, cfg, shape, aot, check, peer, peak, run):
  """Times the compiled JAX step against the torch step ``run`` alternately
  and builds the side-by-side row. ``aot``: (compiled step, compile seconds,
  XLA FLOPs, state, batch)."""
  compiled, compile_s, flops, state, batch = aot
  torch_flops = peer.matmul_flops_of(run)
  timed = time_alternating(
    {'jax': _Stepper(compiled, state, batch), 'torch': run},
    warmup=opts.warmup,
    repeats=opts.repeats,
    steps=opts.steps,
    settle=opts.settle,
  )
  return _vs_row(
    name,
    cfg.model.backbone.name,
    method,
    cfg.batch_size,
    shape,
    timed,
    compile_s,
    flops,
    torch_flops,
    check,
    peak,
  )


def _vs_row(
  name,
  backbone,
  method,
  batch,
  shape,
  timed,
  compile_s,
  flops,
  torch_flops,
  check,
  peak,
):
  """The side-by-side row from the two timings (throughput in samples/s)."""
  j, t = timed['jax'], timed['torch']
  peak_gflops = peak['peak_gflops_per_s']
  gflops = flops / 1e9
  return {
    'name': name,
    'backbone': backbone,
    'method': method,
    'dtype': 'float32',
    'batch': batch,
    'shape': list(shape),
    **j,
    'first_call_s': compile_s,
    'compile_s': compile_s,
    'steps_per_s': 1.0 / j['median_s'],
    'throughput': batch / j['median_s'],
    'unit': 'samples/s',
    'torch': dict(t, throughput=batch / t['median_s']),
    'torch_over_jax': t['median_s'] / j['median_s'],
    'flops_per_step': flops,
    'flops_source': FLOPS_SOURCE,
    'torch_matmul_conv_flops': torch_flops,
    'jax_gflops_per_s': gflops / j['median_s'],
    'torch_gflops_per_s': gflops / t['median_s'],
    'jax_fraction_of_peak': gflops / j['median_s'] / peak_gflops,
    'torch_fraction_of_peak': gflops / t['median_s'] / peak_gflops,
    'equivalence': _equivalence_brief(check),
  }


def bench_pretrain_vs_torch(opts, backbone, method, mesh, rng, peer, peak):
  cfg = pretrain_config(opts, backbone, method)
  peer.check_pretrain_config(cfg)
  schedule, graphdef, state, step_fn, x, batch = _pretrain_setup(
    cfg, opts, mesh, rng
  )
  compiled, compile_s, flops = _aot_compile(step_fn, state, batch)
  torch_step = peer.PretrainPeer(
    cfg, peer.jax_scalar_fn(schedule), seed=opts.seed
  )
  # Same weights and views: one step of each, compared (it also warms both).
  state, check = peer.check_pretrain(
    cfg, graphdef, state, batch, compiled, torch_step
  )
  x_t = peer.to_torch(x)
  row = _time_vs_torch(
    opts,
    'pretrain_step_vs_torch',
    method,
    cfg,
    x.shape,
    (compiled, compile_s, flops, state, batch),
    check,
    peer,
    peak,
    lambda: torch_step.step(x_t),
  )
  return row, cfg


def bench_finetune_vs_torch(opts, backbone, protocol, mesh, rng, peer, peak):
  cfg = finetune_config(opts, backbone, protocol)
  peer.check_finetune_config(cfg)
  k = opts.num_classes
  schedule, tx, graphdef, state = _finetune_setup(cfg, k, mesh)
  x = _skeletons(rng, cfg.batch_size, opts.persons, cfg.data.pad_length)
  labels, batch = _finetune_batch(cfg, k, x, rng, mesh)
  step_fn = finetune.make_train_step(graphdef, tx, protocol, schedule, mesh)
  compiled, compile_s, flops = _aot_compile(step_fn, state, batch)
  torch_step = peer.FinetunePeer(cfg, k, peer.jax_scalar_fn(schedule))
  state, check = peer.check_finetune(
    cfg, graphdef, state, batch, compiled, torch_step
  )
  x_t, labels_t = peer.to_torch(x), peer.to_torch(labels, peer.torch.long)
  row = _time_vs_torch(
    opts,
    'finetune_step_vs_torch',
    protocol,
    cfg,
    x.shape,
    (compiled, compile_s, flops, state, batch),
    check,
    peer,
    peak,
    lambda: torch_step.step(x_t, labels_t),
  )
  return row, cfg


def format_vs_table(rows, peak):
  head = (
    'step',
    'method',
    'shape',
    'JAX ms (IQR)',
    'torch ms (IQR)',
    'torch/JAX',
    'GFLOP/step',
    'JAX GFLOP/s',
    'torch GFLOP/s',
    'max rel diff',
  )
  lines = [head]
  for r in rows:
    t = r['torch']
    eq = r['equivalence']
    lines.append(
      (
        r['name'].replace('_vs_torch', ''),
        r['method'],
        'x'.join(map(str, r['shape'])),
        f'{1e3 * r["median_s"]:.0f} ({1e3 * r["iqr_s"]:.0f})',
        f'{1e3 * t["median_s"]:.0f} ({1e3 * t["iqr_s"]:.0f})',
        f'{r["torch_over_jax"]:.2f}',
        f'{r["flops_per_step"] / 1e9:.1f}',
        f'{r["jax_gflops_per_s"]:.1f} ({100 * r["jax_fraction_of_peak"]:.0f}%)',
        f'{r["torch_gflops_per_s"]:.1f} '
        f'({100 * r["torch_fraction_of_peak"]:.0f}%)',
        f'{eq["max_rel"]:.1e} ({"ok" if eq["ok"] else "FAILED"})',
      )
    )
  widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
  out = ['  '.join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
  out.insert(1, '  '.join('-' * w for w in widths))
  out.append(
    f'fp32 matmul peak ({peak["n"]}^3): JAX '
    f'{peak["jax_gflops_per_s"]:.1f}, torch {peak["torch_gflops_per_s"]:.1f} '
    'GFLOP/s (% of the higher in brackets); torch/JAX > 1: JAX is faster.'
  )
  return '\n'.join(out)


# ---------------------------------------------------------------------------
# Environment, table, entry point.
# ---------------------------------------------------------------------------
def _loadavg():
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:  # not available on this platform
    return None


def environment():
  dev = jax.devices()[0]
  try:
    usable_cpus = len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    usable_cpus = os.cpu_count()
  return {
    'backend': jax.default_backend(),
    'device_kind': dev.device_kind,
    'device_count': jax.device_count(),
    'local_device_count': jax.local_device_count(),
    'cpu_count': os.cpu_count(),
    'usable_cpus': usable_cpus,
    'platform': platform.platform(),
    'versions': train_utils.versions(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    # skel_jax.hugepages: whether XLA's buffers got transparent huge pages.
    'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
    'compilation_cache': {
      'enabled': bool(jax.config.jax_enable_compilation_cache),
      'dir': jax.config.jax_compilation_cache_dir,
    },
    # 1/5/15-min load at the end: contention from other processes shows up
    # here (compare with loadavg_start) before it is blamed on the code.
    'loadavg_end': _loadavg(),
    'timestamp': datetime.datetime.now(datetime.timezone.utc).isoformat(),
  }


def _fmt_rate(v):
  return f'{v:,.0f}' if v >= 100 else f'{v:.3g}'


def format_table(rows):
  head = (
    'name',
    'backbone',
    'method',
    'batch',
    'shape',
    'median ms',
    'IQR ms',
    'throughput',
    'compile s',
  )
  lines = [head]
  for r in rows:
    compile_s = '-' if r['compile_s'] is None else f'{r["compile_s"]:.1f}'
    lines.append(
      (
        r['name'],
        r['backbone'],
        r['method'],
        str(r['batch']),
        'x'.join(map(str, r['shape'])),
        f'{1e3 * r["median_s"]:.1f}',
        f'{1e3 * r["iqr_s"]:.1f}',
        f'{_fmt_rate(r["throughput"])} {r["unit"]}',
        compile_s,
      )
    )
  widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
  out = ['  '.join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
  out.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(out)


def run(opts, out=None, verbose=True):
  """Runs the selected sections; returns (and writes to ``out``) the report."""
  for name, allowed in (
    ('sections', SECTIONS),
    ('methods', METHODS),
    ('protocols', TRAIN_PROTOCOLS),
    ('backbones', tuple(models.BACKBONES)),
  ):
    unknown = set(getattr(opts, name)) - set(allowed)
    if unknown:
      raise ValueError(f'unknown {name} {sorted(unknown)}; expected {allowed}')
  for name in ('batch', 'ft_batch', 'infer_batch'):
    _check_divisible(name, getattr(opts, name))
  if opts.vs_torch and (opts.dtype != 'float32' or opts.fsdp != 1):
    raise ValueError('--vs_torch compares float32 steps (no --dtype, --fsdp)')
  load_start = _loadavg()
  # --fsdp > 1: the (data, fsdp) mesh; only the pretraining state is sharded.
  mesh = train_utils.make_mesh(fsdp=opts.fsdp)
  rng = np.random.default_rng(opts.seed)
  rows, configs, extra = [], {}, {}
  peer = peak = None
  if opts.vs_torch:
    peer = import_torch_peer(opts.torch_threads)
    peak = extra['matmul_peak'] = matmul_peak(peer)
    extra['vs_torch_skipped'] = []
    if verbose:
      print(
        f'[bench] fp32 matmul peak: JAX {peak["jax_gflops_per_s"]:.1f}, '
        f'torch {peak["torch_gflops_per_s"]:.1f} GFLOP/s',
        flush=True,
      )

  def skip(what):
    extra['vs_torch_skipped'].append(what)
    if verbose:
      print(f'[bench] --vs_torch: no torch peer of {what}, skipped', flush=True)

  def add(new_rows):
    for r in new_rows:
      rows.append(r)
      if verbose and 'torch' in r:
        eq = r['equivalence']
        print(
          f'[bench] {r["name"]} {r["backbone"]} {r["method"]}: JAX '
          f'{1e3 * r["median_s"]:.1f} ms, torch '
          f'{1e3 * r["torch"]["median_s"]:.1f} ms, torch/JAX '
          f'{r["torch_over_jax"]:.2f}; same outputs: max rel diff '
          f'{eq["max_rel"]:.1e} ({"ok" if eq["ok"] else "FAILED"})',
          flush=True,
        )
      elif verbose:
        print(
          f'[bench] {r["name"]:<17} {r["backbone"]:<5} {r["method"]:<19}'
          f' {1e3 * r["median_s"]:9.1f} ms  '
          f'{_fmt_rate(r["throughput"])} {r["unit"]}',
          flush=True,
        )

  for backbone in opts.backbones:
    if 'pretrain' in opts.sections:
      for method in opts.methods:
        if not opts.vs_torch:
          row, cfg = bench_pretrain(opts, backbone, method, mesh, rng)
        elif backbone in TORCH_BACKBONES and method in TORCH_METHODS:
          row, cfg = bench_pretrain_vs_torch(
            opts, backbone, method, mesh, rng, peer, peak
          )
        else:
          skip(f'pretrain/{backbone}/{method}')
          continue
        configs[f'pretrain/{backbone}/{method}'] = cfg.to_dict()
        add([row])
    for i, protocol in enumerate(TRAIN_PROTOCOLS):
      # Inference is protocol-independent: timed once, with the first state.
      infer = 'inference' in opts.sections and i == 0
      train = 'finetune' in opts.sections and protocol in opts.protocols
      if train and opts.vs_torch:
        # The side-by-side row replaces the JAX-only one.
        train = False
        if backbone in TORCH_BACKBONES and protocol in TORCH_PROTOCOLS:
          row, cfg = bench_finetune_vs_torch(
            opts, backbone, protocol, mesh, rng, peer, peak
          )
          configs[f'finetune/{backbone}/{protocol}'] = cfg.to_dict()
          add([row])
        else:
          skip(f'finetune/{backbone}/{protocol}')
      if train or infer:
        new_rows, cfg = bench_finetune(
          opts,
          backbone,
          protocol,
          mesh,
          rng,
          with_inference=infer,
          with_train=train,
        )
        configs[f'finetune/{backbone}/{protocol}'] = cfg.to_dict()
        add(new_rows)
  if 'pipeline' in opts.sections:
    if opts.data_dir:
      new_rows, extra['pipeline'] = bench_pipeline(opts, opts.data_dir)
    else:
      with tempfile.TemporaryDirectory(prefix='skel_bench_') as d:
        new_rows, extra['pipeline'] = bench_pipeline(opts, d)
    add(new_rows)

  vs_rows = [r for r in rows if 'torch' in r]
  if (
    opts.vs_torch
    and not vs_rows
    and {'pretrain', 'finetune'} & set(opts.sections)
  ):
    raise ValueError(
      f'--vs_torch: nothing to compare; the torch peer has backbones '
      f'{TORCH_BACKBONES}, methods {TORCH_METHODS}, protocols {TORCH_PROTOCOLS}'
    )
  env = {**environment(), 'loadavg_start': load_start}
  if peer is not None:
    env['versions']['torch'] = peer.torch.__version__
    env['torch_threads'] = peer.torch.get_num_threads()
  report = {
    'rows': rows,
    'env': env,
    'options': dataclasses.asdict(opts),
    'configs': configs,
    'compile_s': {
      f'{r["name"]}/{r["backbone"]}/{r["method"]}': r['compile_s']
      for r in rows
      if r['compile_s'] is not None
    },
    **extra,
  }
  if verbose:
    print(
      f'\n{env["backend"]} x {env["device_count"]} ({env["device_kind"]}),'
      f' {env["usable_cpus"]} CPUs, jax {env["versions"]["jax"]}, '
      f'width {opts.width}, load avg {load_start} -> '
      f'{env["loadavg_end"]}\n' + format_table(rows),
      flush=True,
    )
    if vs_rows:
      print('\n' + format_vs_table(vs_rows, peak), flush=True)
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
      json.dump(report, f, indent=2, default=str)
    if verbose:
      print(f'[bench] wrote {out}', flush=True)
  return report


def _define_flags():
  """Flags exist only for the CLI: importing this module defines none."""
  from absl import flags as f

  from skel_jax import datasets  # noqa: F401

  f.DEFINE_string('out', 'bench.json', 'JSON report path ("" = none).')
  f.DEFINE_bool(
    'quick',
    False,
    'CPU-sized run: width 0.125, batch 16, '
    'clip 64, few repeats. Explicit flags override it.',
  )
  f.DEFINE_list('backbones', list(Options.backbones), 'agcn, stgcn.')
  f.DEFINE_list('methods', list(Options.methods), ', '.join(METHODS))
  f.DEFINE_list(
    'protocols', list(Options.protocols), ', '.join(TRAIN_PROTOCOLS)
  )
  f.DEFINE_list('sections', list(SECTIONS), ', '.join(SECTIONS))
  # None = the --quick or full default.
  for name, kind in (
    ('width', 'float'),
    ('batch', 'integer'),
    ('clip_len', 'integer'),
    ('persons', 'integer'),
    ('queue_size', 'integer'),
    ('num_snippets', 'integer'),
    ('ft_batch', 'integer'),
    ('pad_length', 'integer'),
    ('head_dim', 'integer'),
    ('num_classes', 'integer'),
    ('infer_len', 'integer'),
    ('infer_batch', 'integer'),
    ('repeats', 'integer'),
    ('warmup', 'integer'),
    ('steps', 'integer'),
    ('settle', 'integer'),
    ('pipeline_batches', 'integer'),
    ('seed', 'integer'),
    ('dtype', 'string'),
    ('fsdp', 'integer'),
    ('torch_threads', 'integer'),
  ):
    getattr(f, f'DEFINE_{kind}')(name, None, f'Options.{name}.')
  f.DEFINE_bool(
    'vs_torch',
    None,
    'Time the pretrain/finetune steps side by side with the PyTorch peer '
    '(skel_jax.torch_peer; pip install -e .[torch]).',
  )
  # build_data (imported lazily by config validation) owns --data_dir.
  f.DEFINE_string(
    'pipeline_data_dir',
    '',
    'TFDS dir for the pipeline '
    'section ("" = a temporary directory, built from scratch).',
  )
  return f.FLAGS


def main(argv):
  from absl import app
  from absl import logging

  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # TFDS build chatter
  flags_ = FLAGS
  # Real compile times: no persistent-cache hits.
  jax.config.update('jax_enable_compilation_cache', False)
  overrides = {
    name: getattr(flags_, name)
    for name in (f.name for f in dataclasses.fields(Options))
    if name != 'data_dir' and getattr(flags_, name) is not None
  }
  overrides['data_dir'] = flags_.pipeline_data_dir
  for name in ('backbones', 'methods', 'protocols', 'sections'):
    overrides[name] = tuple(overrides[name])
  opts = quick_options(**overrides) if flags_.quick else Options(**overrides)
  try:
    run(opts, out=flags_.out)
  except TorchMissing as e:
    sys.exit(f'[bench] {e}')


if __name__ == '__main__':
  from absl import app as _app

  FLAGS = _define_flags()
  _app.run(main)
