"""Shared training plumbing: mesh and shardings, run banners, metric logs,
the non-finite guard (optimizers and schedules: ``skel_jax.optim``)."""

import json
import os
import platform
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'


def compilation_cache_dir():
  """$SKEL_JAX_CACHE_DIR, else $XDG_CACHE_HOME/skel_jax/xla (~/.cache/...).

  The user's cache directory, not the clone's: every clone and worktree (and
  CI's fresh clones) reads what another already compiled. It grows without
  bound (as JAX's default; an LRU limit would rescan the whole directory on
  every write): ``make clean-cache`` empties it."""
  if os.environ.get('SKEL_JAX_CACHE_DIR'):
    return os.path.abspath(os.environ['SKEL_JAX_CACHE_DIR'])
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
    os.path.expanduser('~'), '.cache'
  )
  return os.path.join(base, 'skel_jax', 'xla')


def enable_compilation_cache(min_compile_secs=0.05):
  """Persistent XLA cache: repeated stages and re-runs skip recompilation.

  Programs that compile in ``min_compile_secs`` or more are kept, not only
  the big steps: a model's eager parameter init compiles one small
  random-number program per parameter shape (~10 s for the smoke AGCN on a
  2-core CPU), and a re-run reads them back in milliseconds (a smoke
  pretraining run: 40 s -> 29 s with a warm cache). The key covers the
  program, the jaxlib version and the XLA flags, so a stale entry is never
  used for another program."""
  jax.config.update('jax_compilation_cache_dir', compilation_cache_dir())
  jax.config.update(
    'jax_persistent_cache_min_compile_time_secs', min_compile_secs
  )


# ---------------------------------------------------------------------------
# Mesh and shardings: a 1-D data-parallel mesh (params and queues replicated),
# or a 2-D (data, fsdp) mesh whose 'fsdp' axis also shards large parameters
# and their optimizer state.
# ---------------------------------------------------------------------------
def make_mesh(devices=None, fsdp=1):
  """Mesh over ``devices`` (default: all devices of all hosts).

  ``fsdp == 1``: the 1-D ``('data',)`` mesh. ``fsdp > 1``: a 2-D mesh of shape
  ``(n // fsdp, fsdp)`` with axes ``('data', 'fsdp')``.
  """
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  fsdp = int(fsdp)
  if fsdp < 1 or n % fsdp:
    raise ValueError(
      f'fsdp={fsdp} must be >= 1 and divide the {n} devices of the mesh'
    )
  if fsdp == 1:
    return jax.make_mesh(
      (n,),
      (DATA_AXIS,),
      axis_types=(jax.sharding.AxisType.Auto,),
      devices=devices,
    )
  return jax.make_mesh(
    (n // fsdp, fsdp),
    (DATA_AXIS, FSDP_AXIS),
    axis_types=(jax.sharding.AxisType.Auto,) * 2,
    devices=devices,
  )


def data_sharding(mesh):
  """Batch dim over all mesh axes: every device gets its own slice."""
  axes = tuple(mesh.axis_names)
  return NamedSharding(mesh, P(axes[0] if len(axes) == 1 else axes))


def replicated(mesh):
  return NamedSharding(mesh, P())


FSDP_STATE_KEYS = ('params', 'key_params', 'opt_state')


def _fsdp_spec(shape, size):
  """P with the largest dim divisible by ``size`` on 'fsdp' (ties: last)."""
  best = None
  for i, d in enumerate(shape):
    if d % size == 0 and (best is None or d >= shape[best]):
      best = i
  if best is None:
    return P()
  return P(*([None] * best + [FSDP_AXIS]))


def state_shardings(state, mesh, min_size=2**14):
  """NamedShardings (a pytree matching ``state``) for a train-state dict.

  1-D mesh: everything replicated. 2-D ``(data, fsdp)`` mesh: leaves under
  'params', 'key_params' and 'opt_state' with at least ``min_size`` elements
  have their largest ``fsdp``-divisible dim sharded over 'fsdp' (ZeRO-3 /
  FSDP style); the XLA partitioner inserts the all-gathers where a weight is
  used and reduce-scatters its gradient, so the step code is unchanged. All
  else (MoCo queues, as the design notes keep them, BN statistics, scalars,
  rng, small params) stays replicated.
  """
  rep = replicated(mesh)
  if FSDP_AXIS not in mesh.axis_names:
    return jax.tree.map(lambda _: rep, state)
  size = mesh.shape[FSDP_AXIS]

  def pick(path, x):
    top = path[0] if path else None
    name = getattr(top, 'key', None)
    shape = tuple(np.shape(x))
    if name in FSDP_STATE_KEYS and int(np.prod(shape)) >= min_size:
      return NamedSharding(mesh, _fsdp_spec(shape, size))
    return rep

  return jax.tree_util.tree_map_with_path(pick, state)


# ---------------------------------------------------------------------------
# Versions and run records.
# ---------------------------------------------------------------------------
def versions():
  import optax as _optax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp

  return {
    'python': platform.python_version(),
    'jax': jax.__version__,
    'jaxlib': jax.lib.__version__ if hasattr(jax.lib, '__version__') else None,
    'flax': flax.__version__,
    'optax': _optax.__version__,
    'orbax': getattr(ocp, '__version__', None),
    'numpy': np.__version__,
    'backend': jax.default_backend(),
    'devices': jax.device_count(),
    'processes': jax.process_count(),
  }


def print_banner(title):
  v = versions()
  print(
    f'[skel_jax] {title} | python {v["python"]} jax {v["jax"]} '
    f'flax {v["flax"]} optax {v["optax"]} | {v["backend"]} x '
    f'{v["devices"]} device(s), {v["processes"]} process(es)',
    flush=True,
  )


def is_chief():
  """Process 0 writes logs, records and plots (all processes checkpoint)."""
  return jax.process_index() == 0


def write_run_record(workdir, config):
  """Config + versions, so a workdir says how it was produced.

  First checks ``config`` against the config that started ``workdir``
  (``run_record``): a different run stops here, before anything is written.
  """
  from skel_jax import run_record  # pylint: disable=g-import-not-at-top

  fresh, changes = run_record.check(workdir, config)
  os.makedirs(workdir, exist_ok=True)
  if not is_chief():
    return
  run_record.write(workdir, config, fresh, changes)
  with open(os.path.join(workdir, 'versions.json'), 'w') as f:
    json.dump({**versions(), 'argv': sys.argv}, f, indent=2)


class MetricLog:
  """Appends one JSON object per logged step to ``metrics.jsonl``.

  ``push`` takes device scalars and only converts the *previous* push to
  Python floats, so logging never stalls the device pipeline.
  """

  def __init__(self, workdir, filename='metrics.jsonl'):
    from skel_jax import tensorboard  # pylint: disable=g-import-not-at-top

    self.path = os.path.join(workdir, filename)
    self._pending = None
    self._t0 = time.time()
    self.last = None
    # The same scalars as TensorBoard events (no TensorFlow needed).
    self.tb = (
      tensorboard.ScalarWriter(os.path.join(workdir, 'tb'))
      if is_chief()
      else None
    )

  def truncate(self, step):
    """Drops records after ``step`` (the step a resumed run restarts from),
    so a step never appears twice; also drops a line cut by a hard kill."""
    if not is_chief() or not os.path.exists(self.path):
      return
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue
        if record.get('step', 0) <= step:
          kept.append(json.dumps(record) + '\n')
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

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
    self.last = record
    if not is_chief():
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    self.tb.scalars(
      record['step'], {k: v for k, v in record.items() if k != 'step'}
    )

  def close(self):
    self.flush()
    if self.tb is not None:
      self.tb.close()


# ---------------------------------------------------------------------------
# Optimisers and schedules (PyTorch-style coupled weight decay).
# ---------------------------------------------------------------------------
# Non-finite losses: decided on device, checked on the host only at log and
# checkpoint points (no per-step host sync).
# ---------------------------------------------------------------------------
NONFINITE_POLICIES = ('stop', 'skip')


class NonFiniteLossError(FloatingPointError):
  pass


def guard_nonfinite(new_state, old_state, loss_terms):
  """Keeps ``old_state`` (but advances the step) when a loss term is not finite.

  Records the first offending (step, term index) in ``state['nonfinite']`` and
  counts skipped steps, so the host can stop or report without syncing.
  """
  finite = jnp.stack([jnp.all(jnp.isfinite(v)) for v in loss_terms])
  ok = jnp.all(finite)
  kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, old_state)
  first_bad = jnp.stack(
    [old_state['step'], jnp.argmin(finite).astype(jnp.int32)]
  )
  record = old_state['nonfinite']
  kept['nonfinite'] = jnp.where((record[0] < 0) & ~ok, first_bad, record)
  kept['skipped_steps'] = old_state['skipped_steps'] + (~ok).astype(jnp.int32)
  kept['step'] = new_state['step']
  return kept


def nonfinite_fields():
  return {
    'nonfinite': jnp.full((2,), -1, jnp.int32),
    'skipped_steps': jnp.zeros((), jnp.int32),
  }


def check_nonfinite(state, term_names, policy, ckpt):
  """Host check (syncs on two scalars): raises under the 'stop' policy."""
  step, term = (int(v) for v in jax.device_get(state['nonfinite']))
  if step < 0 or policy == 'skip':
    return
  last = ckpt.latest_step()
  raise NonFiniteLossError(
    f'non-finite {term_names[term]} at step {step + 1}; training stopped '
    f'and the last good checkpoint (step {last}) is kept in '
    f'{ckpt.directory}. Set --config.nonfinite=skip to skip such steps.'
  )


# ---------------------------------------------------------------------------
# Preemption: SIGTERM (what pod schedulers send) or SIGINT (Ctrl-C) -> final
# checkpoint, exit 128 + signal (143 / 130).
# ---------------------------------------------------------------------------
class PreemptionGuard:
  """Context manager turning SIGTERM / SIGINT into a flag the loop polls."""

  EXIT_CODE = 143  # 128 + SIGTERM
  SIGNALS = ('SIGTERM', 'SIGINT')

  def __init__(self):
    self.requested = False
    self.signum = None
    self._previous = {}

  def _handler(self, signum, frame):
    del frame
    import signal

    if self.requested and signum == signal.SIGINT:
      # A second Ctrl-C: stop now (the last saved checkpoint is kept).
      raise KeyboardInterrupt
    self.requested = True
    self.signum = signum

  @property
  def signal_name(self):
    import signal

    return signal.Signals(self.signum).name if self.signum else 'signal'

  @property
  def exit_code(self):
    return 128 + self.signum if self.signum else self.EXIT_CODE

  def __enter__(self):
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
      for name in self.SIGNALS:
        sig = getattr(signal, name)
        self._previous[sig] = signal.signal(sig, self._handler)
    return self

  def __exit__(self, *exc):
    import signal

    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}
    return False


def mesh_for(config):
  """The mesh over ``config.num_devices`` devices (0 = all), with a
  ``config.fsdp``-sized parameter-sharding axis when fsdp > 1."""
  n = config.get('num_devices', 0)
  fsdp = config.get('fsdp', 1)
  if n:
    if n > jax.device_count():
      raise ValueError(
        f'num_devices={n} but only {jax.device_count()} devices exist'
      )
    return make_mesh(jax.devices()[:n], fsdp=fsdp)
  return make_mesh(fsdp=fsdp)
