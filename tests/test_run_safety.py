"""No run is silently mixed, lost or left half-written: Ctrl-C / SIGTERM
saves, metrics never repeat a step, unreadable checkpoints fall back, and a
workdir refuses a different config.

Most tests drive ``loop.run`` with a tiny pure-Python state (no model, no
compilation); the few that need real pretraining share one smoke run."""
import json
import os
import signal

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from skel_jax import checkpoint
from skel_jax import loop
from skel_jax import train_utils


# ---------------------------------------------------------------- helpers ---
def _steps(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line)['step'] for line in f]


def _saved(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints'))
                if d.isdigit())


def _add_one(i):
  return {'x': np.full((1,), i, np.float32)}


def tiny_run(workdir, total, signal_at=None, sig=signal.SIGINT, width=1):
  """Runs the shared loop on state {w: running sum of batch indices}; sends
  ``sig`` to this process during step ``signal_at`` (1-based)."""
  mesh = train_utils.make_mesh(jax.devices()[:1])
  rep, dsh = train_utils.replicated(mesh), train_utils.data_sharding(mesh)
  state = {'step': jnp.zeros((), jnp.int32), 'w': jnp.zeros((width,)),
           **train_utils.nonfinite_fields()}
  ckpt_cfg = ml_collections.ConfigDict({'save_interval_steps': 5,
                                        'max_to_keep': 5})
  ckpt, start, state = checkpoint.open_and_restore(workdir, ckpt_cfg, state,
                                                   rep, 'tiny')
  ds = grain.MapDataset.range(10_000).map(_add_one)

  def step_fn(state, batch):
    if signal_at is not None and int(state['step']) + 1 == signal_at:
      os.kill(os.getpid(), sig)
    new = dict(state, step=state['step'] + 1, w=state['w'] + batch['x'][0])
    return new, {'loss': new['w'][0]}
  return loop.run(step_fn=step_fn, state=state, ds=ds, data_sharding=dsh,
                  ckpt=ckpt, log=train_utils.MetricLog(workdir), start=start,
                  total_steps=total, log_every=1, loss_terms=('loss',),
                  nonfinite_policy='stop', desc='tiny')


def _expected_w(steps):
  return float(sum(range(steps)))  # batch s holds index s


# ------------------------------------------------- 3. SIGINT like SIGTERM ---
@pytest.mark.parametrize('sig,code', [(signal.SIGINT, 130),
                                      (signal.SIGTERM, 143)])
def test_signal_saves_then_exits_and_resume_continues(tmp_path, sig, code,
                                                      capsys):
  workdir = str(tmp_path)
  with pytest.raises(SystemExit) as e:
    tiny_run(workdir, 12, signal_at=7, sig=sig)
  assert e.value.code == code
  assert _saved(workdir)[-1] == 7  # off the 5-step interval: saved on signal
  assert f'{signal.Signals(sig).name}: saved step 7' in capsys.readouterr().err
  state = tiny_run(workdir, 12)
  assert float(state['w'][0]) == _expected_w(12)
  assert _steps(workdir) == list(range(1, 13))


def test_metrics_never_repeat_a_step_after_a_hard_kill(tmp_path):
  workdir = str(tmp_path)
  tiny_run(workdir, 5)
  # A SIGKILL after step 8 leaves records past the last checkpoint (5) and
  # maybe half a line.
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    for step in (6, 7, 8):
      f.write(json.dumps({'step': step, 'loss': -1.0}) + '\n')
    f.write('{"step": 9, "lo')
  tiny_run(workdir, 10)
  assert _steps(workdir) == list(range(1, 11))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert all(json.loads(line)['loss'] >= 0 for line in f)
