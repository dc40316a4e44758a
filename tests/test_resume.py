"""Nothing a user trained is lost: SIGKILL / SIGTERM resume, device-count
changes, non-finite losses, export for transfer."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs
from skel_jax import config_defaults
from skel_jax import export
from skel_jax import finetune
from skel_jax import main as main_lib
from skel_jax import optim
from skel_jax import pretrain
from skel_jax import train_utils
from skel_jax import weights

# Not an xdist group: the tests share only the smoke data (built in 1 s per
# worker), so the file's ~5 minutes can spread over the workers.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 26  # checkpoints every 10 steps (the smoke config)


def _losses(workdir):
  """step -> loss; a resumed run drops the records past its restored step,
  so no step appears twice (a line cut by SIGKILL is still being written)."""
  out = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      try:
        r = json.loads(line)
      except json.JSONDecodeError:
        continue
      assert r['step'] not in out, f'step {r["step"]} logged twice'
      out[r['step']] = r['loss']
  return out


def _cmd(workdir, data_dir):
  return [
    sys.executable,
    '-m',
    'skel_jax.main',
    '--config=configs/pretrain_synthetic.py:smoke',
    f'--workdir={workdir}',
    f'--config.data.dir={data_dir}',
    f'--config.num_steps={STEPS}',
    '--config.log_every=1',
    '--config.probe.enabled=False',  # nothing here reads the probe
  ]


def _wait_for_step(workdir, proc, step, timeout=240):
  path = os.path.join(workdir, 'metrics.jsonl')
  t0 = time.time()
  while time.time() - t0 < timeout:
    assert proc.poll() is None, 'training ended before it could be interrupted'
    if (
      os.path.exists(path)
      and _losses(workdir)
      and max(_losses(workdir)) >= step
    ):
      return
    time.sleep(0.2)
  raise TimeoutError(f'step {step} not reached')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp('full'))
  subprocess.run(
    _cmd(workdir, data_dir),
    cwd=ROOT,
    check=True,
    capture_output=True,
    timeout=600,
  )
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, STEPS + 1))
  return losses


def _start(workdir, data_dir, stderr=subprocess.DEVNULL):
  return subprocess.Popen(
    _cmd(workdir, data_dir),
    cwd=ROOT,
    stdout=subprocess.DEVNULL,
    stderr=stderr,
    text=True,
  )


def test_sigterm_and_sigkill_then_same_command_resumes_exactly(
  uninterrupted, data_dir, tmp_path
):
  """One workdir, interrupted twice (three processes, not four: the two
  interruptions used to be separate tests that each re-ran the whole job).
  SIGTERM at step >= 3 must save an off-interval checkpoint and exit with
  the preemption code; the same command resumes from it; SIGKILL at step
  >= 14 loses what followed the step-10 checkpoint; the same command
  resumes again, and every step's loss is the uninterrupted run's."""
  workdir = str(tmp_path)
  proc = _start(workdir, data_dir, stderr=subprocess.PIPE)
  _wait_for_step(workdir, proc, 3)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == train_utils.PreemptionGuard.EXIT_CODE, err[-2000:]
  saved = sorted(
    int(d)
    for d in os.listdir(os.path.join(workdir, 'checkpoints'))
    if d.isdigit()
  )
  assert saved[-1] >= 3 and saved[-1] % 10 != 0, saved  # off-interval save
  assert 'SIGTERM' in err

  proc = _start(workdir, data_dir)
  _wait_for_step(workdir, proc, 14)  # the step-10 checkpoint exists
  proc.send_signal(signal.SIGKILL)
  proc.wait()

  subprocess.run(
    _cmd(workdir, data_dir),
    cwd=ROOT,
    check=True,
    capture_output=True,
    timeout=600,
  )
  resumed = _losses(workdir)
  assert sorted(resumed) == list(range(1, STEPS + 1))
  np.testing.assert_allclose(
    [resumed[s] for s in range(1, STEPS + 1)],
    [uninterrupted[s] for s in range(1, STEPS + 1)],
    rtol=1e-5,
  )


def _smoke_pretrain(data_dir, steps, num_devices, save_every=10):
  c = configs.load('pretrain_synthetic', 'smoke')
  c.data.dir = data_dir
  c.num_steps = steps
  c.num_devices = num_devices
  c.log_every = 1
  c.checkpoint.save_interval_steps = save_every
  c.probe.enabled = False  # nothing here reads the probe
  return c


def test_checkpoint_moves_between_device_counts(data_dir, tmp_path):
  """8 devices -> 1 -> 8 gives the losses of an uninterrupted 8-device run."""
  ref_dir, dir_ = str(tmp_path / 'ref'), str(tmp_path / 'moved')
  main_lib.run(_smoke_pretrain(data_dir, 12, 8, save_every=4), ref_dir)
  for steps, devices in [(4, 8), (8, 1), (12, 8)]:
    main_lib.run(_smoke_pretrain(data_dir, steps, devices, 4), dir_)
  ref, moved = _losses(ref_dir), _losses(dir_)
  assert sorted(moved) == list(range(1, 13))
  np.testing.assert_allclose(
    [moved[s] for s in range(1, 13)], [ref[s] for s in range(1, 13)], rtol=1e-4
  )
  with open(os.path.join(dir_, 'versions.json')) as f:
    assert json.load(f)['devices'] == 8


def _nan_after_step(monkeypatch, bad_step):
  original = pretrain.compute_losses

  def poisoned(q_out, k_out, state, *args):
    total, metrics = original(q_out, k_out, state, *args)
    bad = state['step'] >= bad_step
    metrics['loss_snippet'] = jnp.where(bad, jnp.nan, metrics['loss_snippet'])
    # A factor, not a select: the gradient is NaN too (jnp.where(bad, nan,
    # total) has a zero gradient, so unguarded parameters stayed finite).
    total = total * jnp.where(bad, jnp.nan, 1.0)
    metrics['loss'] = total
    return total, metrics

  monkeypatch.setattr(pretrain, 'compute_losses', poisoned)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(
  data_dir, tmp_path, monkeypatch
):
  _nan_after_step(monkeypatch, bad_step=5)  # 0-based: the 6th step is bad
  config = _smoke_pretrain(data_dir, 12, 0, save_every=4)
  with pytest.raises(train_utils.NonFiniteLossError) as e:
    main_lib.run(config, str(tmp_path))
  assert 'non-finite loss_snippet at step 6' in str(e.value)
  assert 'last good checkpoint (step 4)' in str(e.value)
  saved = sorted(
    int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit()
  )
  assert saved[-1] == 4


def test_nonfinite_loss_skip_policy(data_dir, tmp_path, monkeypatch):
  """Skipped steps keep the state of the last good step, whole. Guards
  against a guard that never restores it (``kept = dict(new_state)``)."""
  _nan_after_step(monkeypatch, bad_step=8)  # steps 9..12 have NaN grads
  config = _smoke_pretrain(data_dir, 12, 0, save_every=4)
  config.nonfinite = 'skip'
  _, state = main_lib.run(config, str(tmp_path))
  state = jax.device_get(state)
  assert int(state['skipped_steps']) == 4
  assert int(state['step']) == 12
  assert list(state['nonfinite']) == [8, 1]  # 0-based step, loss_snippet
  # Everything but the counters equals the step-8 checkpoint (the last
  # finite step), read back independently of the loop.
  from skel_jax import checkpoint  # pylint: disable=g-import-not-at-top

  ckpt = checkpoint.Checkpointer(str(tmp_path / 'checkpoints'), read_only=True)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  good = jax.device_get(
    ckpt.restore(checkpoint.abstract_like(state, one), step=8)
  )
  ckpt.close()
  assert int(good['step']) == 8 and int(good['skipped_steps']) == 0
  counters = ('step', 'skipped_steps', 'nonfinite')
  # Every other field, key_batch_stats included (a key encoder merged
  # without copy=True aliased them, so skipped steps still updated them),
  # equals the last good checkpoint.
  for name in sorted(set(state) - set(counters)):
    leaves = jax.tree.leaves(state[name])
    assert all(
      np.all(np.isfinite(x))
      for x in leaves
      if np.issubdtype(np.asarray(x).dtype, np.floating)
    ), name
    jax.tree.map(np.testing.assert_array_equal, state[name], good[name])


def test_export_roundtrip_and_architecture_mismatch(data_dir, tmp_path):
  pre_dir, out = str(tmp_path / 'pre'), str(tmp_path / 'export')
  main_lib.run(_smoke_pretrain(data_dir, 4, 0), pre_dir)
  export.export(pre_dir, out)
  desc = weights.read_description(out)
  assert desc['model']['backbone'] == {'name': 'agcn', 'width': 0.125}
  assert desc['includes'] == ['backbone'] and desc['source']['step'] == 4
  # The loaded module carries the checkpoint's weights and runs.
  backbone = weights.load_backbone(out)
  _, _, params, _ = weights.restore_workdir(pre_dir)
  jax.tree.map(
    np.testing.assert_array_equal,
    nnx.to_pure_dict(nnx.state(backbone, nnx.Param)),
    params['backbone'],
  )
  feats = backbone(jnp.zeros((2, 16, 25, 3)), train=False)
  assert feats[-1].shape == (2, 2, 25, 32)
  # Finetuning configs accept the export as their pretraining source ...
  ft = config_defaults.finetune_config()
  ft.model.backbone.width = 0.125
  ft.pretrain_workdir = out
  tx = optim.make_optimizer(ft.optimizer, 1e-3)
  _, state = finetune.initial_state(ft, tx, num_classes=10)
  jax.tree.map(
    np.testing.assert_array_equal,
    nnx.to_pure_dict(state['trainable']['backbone']),
    params['backbone'],
  )
  # ... and a model of another architecture fails naming the shapes.
  ft.model.backbone.width = 0.25
  with pytest.raises(
    ValueError,
    match=r'mismatches\).*model \(.*\) vs '
    r'checkpoint \(',
  ):
    finetune.initial_state(ft, tx, num_classes=10)
