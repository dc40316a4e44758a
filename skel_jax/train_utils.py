"""Shared training plumbing: mesh and shardings, schedules, run banners, metric logs."""
import json
import os
import platform
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


# ---------------------------------------------------------------------------
# Mesh and shardings: a 1-D data-parallel mesh; params and queues replicated.
# ---------------------------------------------------------------------------
def make_mesh(devices=None):
  """1-D ``data`` mesh over ``devices`` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def data_sharding(mesh):
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh):
  return NamedSharding(mesh, P())


# ---------------------------------------------------------------------------
# Versions and run records.
# ---------------------------------------------------------------------------
def versions():
  import orbax.checkpoint as ocp
  import optax as _optax
  return {'python': platform.python_version(), 'jax': jax.__version__,
          'jaxlib': jax.lib.__version__ if hasattr(jax.lib, '__version__')
                    else None,
          'flax': flax.__version__, 'optax': _optax.__version__,
          'orbax': getattr(ocp, '__version__', None), 'numpy': np.__version__,
          'backend': jax.default_backend(), 'devices': jax.device_count(),
          'processes': jax.process_count()}


def print_banner(title):
  v = versions()
  print(f'[skel_jax] {title} | python {v["python"]} jax {v["jax"]} '
        f'flax {v["flax"]} optax {v["optax"]} | {v["backend"]} x '
        f'{v["devices"]} device(s), {v["processes"]} process(es)', flush=True)


def write_run_record(workdir, config):
  """Config + versions, so a workdir says how it was produced."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, 'versions.json'), 'w') as f:
    json.dump({**versions(), 'argv': sys.argv}, f, indent=2)


class MetricLog:
  """Appends one JSON object per logged step to ``metrics.jsonl``.

  ``push`` takes device scalars and only converts the *previous* push to
  Python floats, so logging never stalls the device pipeline.
  """

  def __init__(self, workdir, filename='metrics.jsonl', quiet=False):
    self.path = os.path.join(workdir, filename)
    self._pending = None
    self._t0 = time.time()
    self.quiet = quiet
    self.last = None

  def push(self, step, device_metrics, **host_values):
    self.flush()
    self._pending = (step, device_metrics, host_values, time.time())

  def flush(self):
    if self._pending is None:
      return
    step, metrics, host, t = self._pending
    self._pending = None
    record = {'step': int(step)}
    record.update({k: float(v) for k, v in jax.device_get(metrics).items()})
    record.update(host)
    record['time_s'] = round(t - self._t0, 3)
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    self.last = record


# ---------------------------------------------------------------------------
# Optimisers and schedules (PyTorch-style coupled weight decay).
# ---------------------------------------------------------------------------
def warmup_step_schedule(base_lr, warmup_steps, decay_steps, decay_factor=0.1):
  """Linear warm-up to ``base_lr``, then x decay_factor at each decay step."""
  boundaries = {int(s): decay_factor for s in decay_steps}
  step_fn = optax.piecewise_constant_schedule(base_lr, boundaries)
  if warmup_steps <= 0:
    return step_fn

  def schedule(step):
    warm = base_lr * (step + 1) / warmup_steps
    return jnp.where(step < warmup_steps, warm, step_fn(step))
  return schedule


def make_optimizer(opt_cfg, schedule):
  """SGD(momentum) or Adam with L2 weight decay added to the gradient, as in
  PyTorch's ``weight_decay`` argument (not decoupled AdamW)."""
  chain = []
  if opt_cfg.get('grad_clip_norm', 0):
    chain.append(optax.clip_by_global_norm(opt_cfg.grad_clip_norm))
  if opt_cfg.weight_decay:
    chain.append(optax.add_decayed_weights(opt_cfg.weight_decay))
  if opt_cfg.name == 'sgd':
    chain.append(optax.sgd(schedule, momentum=opt_cfg.momentum))
  elif opt_cfg.name == 'adam':
    chain.append(optax.adam(schedule))
  else:
    raise ValueError(f'optimizer.name={opt_cfg.name!r}: expected sgd or adam')
  return optax.chain(*chain)
