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

import configs
from skel_jax import checkpoint
from skel_jax import loop
from skel_jax import optim
from skel_jax import train_utils

# Orbax's failed reads of damaged checkpoints leave a callback on a closed
# event loop (reported at garbage collection): harmless.
pytestmark = pytest.mark.filterwarnings(
  'ignore::pytest.PytestUnraisableExceptionWarning'
)


# ---------------------------------------------------------------- helpers ---
def _steps(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line)['step'] for line in f]


def _saved(workdir):
  return sorted(
    int(d)
    for d in os.listdir(os.path.join(workdir, 'checkpoints'))
    if d.isdigit()
  )


def _add_one(i):
  return {'x': np.full((1,), i, np.float32)}


def tiny_run(workdir, total, signal_at=None, sig=signal.SIGINT, width=1):
  """Runs the shared loop on state {w: running sum of batch indices}; sends
  ``sig`` to this process during step ``signal_at`` (1-based)."""
  mesh = train_utils.make_mesh(jax.devices()[:1])
  rep, dsh = train_utils.replicated(mesh), train_utils.data_sharding(mesh)
  state = {
    'step': jnp.zeros((), jnp.int32),
    'w': jnp.zeros((width,)),
    **train_utils.nonfinite_fields(),
  }
  ckpt_cfg = ml_collections.ConfigDict(
    {'save_interval_steps': 5, 'max_to_keep': 5}
  )
  ckpt, start, state = checkpoint.open_and_restore(
    workdir, ckpt_cfg, state, rep, 'tiny'
  )
  ds = grain.MapDataset.range(10_000).map(_add_one)

  def step_fn(state, batch):
    if signal_at is not None and int(state['step']) + 1 == signal_at:
      os.kill(os.getpid(), sig)
    new = dict(state, step=state['step'] + 1, w=state['w'] + batch['x'][0])
    return new, {'loss': new['w'][0]}

  return loop.run(
    step_fn=step_fn,
    state=state,
    ds=ds,
    data_sharding=dsh,
    ckpt=ckpt,
    log=train_utils.MetricLog(workdir),
    start=start,
    total_steps=total,
    log_every=1,
    loss_terms=('loss',),
    nonfinite_policy='stop',
    desc='tiny',
  )


def _expected_w(steps):
  return float(sum(range(steps)))  # batch s holds index s


# ------------------------------------------------- 3. SIGINT like SIGTERM ---
@pytest.mark.parametrize(
  'sig,code', [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_signal_saves_then_exits_and_resume_continues(
  tmp_path, sig, code, capsys
):
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


# ------------------------------------------- 2. unreadable checkpoints ---
def corrupt(step_dir):
  """Cuts every array data file of an Orbax step in half (a full disk)."""
  n = 0
  for root, _, names in os.walk(step_dir):
    if os.path.basename(root) == 'd':
      for name in names:
        path = os.path.join(root, name)
        os.truncate(path, os.path.getsize(path) // 2)
        n += 1
  assert n, f'no data files under {step_dir}'


def test_resume_falls_back_to_newest_readable_checkpoint(tmp_path, capsys):
  workdir = str(tmp_path)
  tiny_run(workdir, 10)
  assert _saved(workdir)[-2:] == [5, 10]
  corrupt(os.path.join(workdir, 'checkpoints', '10'))
  capsys.readouterr()
  state = tiny_run(workdir, 12)
  err = capsys.readouterr().err
  assert 'checkpoint step 10 in' in err and 'is unreadable' in err, err
  assert 'trying step 5' in err
  # Continued from step 5 with the right data; nothing was deleted.
  assert float(state['w'][0]) == _expected_w(12)
  assert _steps(workdir) == list(range(1, 13))
  assert os.listdir(os.path.join(workdir, 'checkpoints_unreadable')) == ['10']
  assert 10 in _saved(workdir) and 12 in _saved(workdir)


def test_no_readable_checkpoint_is_an_error_that_deletes_nothing(tmp_path):
  workdir = str(tmp_path)
  tiny_run(workdir, 5)
  for step in _saved(workdir):
    corrupt(os.path.join(workdir, 'checkpoints', str(step)))
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with pytest.raises(
    checkpoint.NoReadableCheckpointError,
    match='no readable checkpoint.*Nothing was deleted',
  ):
    tiny_run(workdir, 8)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before


def test_checkpoint_of_another_shape_is_one_clear_error(tmp_path):
  workdir = str(tmp_path)
  tiny_run(workdir, 5)
  with pytest.raises(checkpoint.CheckpointMismatchError) as e:
    tiny_run(workdir, 8, width=2)
  assert 'w: model (2,) vs checkpoint (1,)' in str(e.value)
  assert len(str(e.value)) < 1000


# ------------------------------------------------ real (smoke) pretraining ---
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smoke_pretrain(data_dir, steps=10):
  c = configs.load('pretrain_synthetic', 'smoke')
  c.data.dir = data_dir
  c.num_steps = steps
  c.log_every = 5
  c.checkpoint.save_interval_steps = 5
  return c


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory, data_dir):
  """A smoke pretraining workdir with real checkpoints at steps 5 and 10
  (of the initial state: what is tested here needs no training)."""
  from skel_jax import pretrain

  c = _smoke_pretrain(data_dir)
  workdir = str(tmp_path_factory.mktemp('pre'))
  train_utils.write_run_record(workdir, c)
  _, state = pretrain.init_state(
    c, optim.make_optimizer(c.optimizer, lambda s: 0.0)
  )
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'))
  for step in (5, 10):
    ckpt.save(step, state, force=True)
  ckpt.close()
  return workdir


def test_a_relative_workdir_restores(pretrained, monkeypatch):
  # `make study` passes --workdir=runs/study: its finetune cells read the
  # pretraining checkpoints by a relative path, which Orbax refused ("path
  # should be absolute"), so every cell failed with "no readable checkpoint".
  from skel_jax import weights

  want = weights.restore_workdir(pretrained, backbone_only=True)
  monkeypatch.chdir(os.path.dirname(pretrained))
  relative = os.path.basename(pretrained)
  got = weights.restore_workdir(relative, backbone_only=True)
  assert got[1] == want[1] == 10
  jax.tree.map(np.testing.assert_array_equal, got[2], want[2])
  assert checkpoint.stored_keys(relative, 'params') == checkpoint.stored_keys(
    pretrained, 'params'
  )


def _copy(src, dst):
  import shutil

  shutil.copytree(src, dst)
  return str(dst)


def _snapshot(workdir):
  """Every file with its size and mtime: 'nothing was written' is equality."""
  out = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      st = os.stat(path)
      out[os.path.relpath(path, workdir)] = (st.st_size, st.st_mtime_ns)
  return out


# --------------------------------------------- 1. one config per workdir ---
def test_changed_config_stops_before_writing_anything(
  pretrained, data_dir, tmp_path
):
  from skel_jax import main as main_lib
  from skel_jax import run_record

  workdir = _copy(pretrained, tmp_path / 'w')
  before = _snapshot(workdir)
  c = _smoke_pretrain(data_dir, steps=20)  # run length may change ...
  c.pretrain.snippet_weight = 0.0  # ... the method may not
  c.optimizer.lr = 0.05
  with pytest.raises(run_record.ConfigChangedError) as e:
    main_lib.run(c, workdir)
  msg = str(e.value)
  assert 'pretrain.snippet_weight: 1.5 (recorded) -> 0.0 (now)' in msg
  assert 'optimizer.lr: 0.1 (recorded) -> 0.05 (now)' in msg
  assert 'num_steps' not in msg
  assert '--allow_config_change' in msg and 'new --workdir' in msg
  assert _snapshot(workdir) == before


def test_allowed_changes_are_recorded_not_refused(
  pretrained, data_dir, tmp_path
):
  # (tests/test_resume.py continues workdirs under new num_steps/num_devices.)
  from skel_jax import run_record

  workdir = _copy(pretrained, tmp_path / 'w')
  c = _smoke_pretrain(data_dir, steps=12)
  c.log_every = 1
  c.num_devices = 1
  c.checkpoint.max_to_keep = 5
  c.data.dir = str(tmp_path / 'moved_data')
  fresh, changes = run_record.check(workdir, c)
  assert not fresh and sorted(changes) == [
    'checkpoint.max_to_keep',
    'data.dir',
    'log_every',
    'num_devices',
    'num_steps',
  ]
  train_utils.write_run_record(workdir, c)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['num_steps'] == 10  # how the workdir was started
  assert run_record.recorded_config(workdir)['num_steps'] == 12
  with open(os.path.join(workdir, 'config_history.jsonl')) as f:
    (record,) = [json.loads(line) for line in f]
  assert record['changes']['num_steps'] == {'old': 10, 'new': 12}
  assert record['forced'] == []
  assert run_record.check(workdir, c) == (False, {})


def test_cli_allow_config_change_continues_and_records(
  pretrained, data_dir, tmp_path
):
  import subprocess
  import sys

  workdir = _copy(pretrained, tmp_path / 'w')
  cmd = [
    sys.executable,
    '-m',
    'skel_jax.main',
    '--config=configs/pretrain_synthetic.py:smoke',
    f'--workdir={workdir}',
    f'--config.data.dir={data_dir}',
    '--config.num_steps=10',
    '--config.log_every=5',
    '--config.checkpoint.save_interval_steps=5',
    '--config.optimizer.lr=0.05',
  ]
  proc = subprocess.run(
    cmd, cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'optimizer.lr: 0.1 (recorded) -> 0.05 (now)' in proc.stderr, (
    proc.stderr[-3000:]
  )
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists(os.path.join(workdir, 'config_history.jsonl'))
  proc = subprocess.run(
    cmd + ['--allow_config_change'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, 'config_history.jsonl')) as f:
    (record,) = [json.loads(line) for line in f]
  assert record['forced'] == ['optimizer.lr']
  assert record['changes']['optimizer.lr'] == {'old': 0.1, 'new': 0.05}
  # The same config now matches the workdir's (changed) one.
  from skel_jax import run_record

  c = _smoke_pretrain(data_dir)
  c.optimizer.lr = 0.05
  assert run_record.check(workdir, c) == (False, {})


def test_workdir_without_checkpoint_starts_fresh_with_any_config(
  data_dir, tmp_path
):
  from skel_jax import run_record

  c = _smoke_pretrain(data_dir)
  train_utils.write_run_record(str(tmp_path), c)  # a start that failed
  c.pretrain.snippet_weight = 0.0
  assert run_record.check(str(tmp_path), c) == (True, {})


# ------------------------------------- 2. finetuning from a damaged workdir ---
def test_finetune_source_falls_back_to_readable_step(
  pretrained, tmp_path, capsys
):
  from skel_jax import finetune

  workdir = _copy(pretrained, tmp_path / 'w')
  corrupt(os.path.join(workdir, 'checkpoints', '10'))
  before = _snapshot(workdir)
  capsys.readouterr()
  bb_params, _ = finetune.load_pretrained_backbone(workdir)
  err = capsys.readouterr().err
  assert 'checkpoint step 10 in' in err and 'trying step 5' in err, err
  assert err.count('unreadable') == 1  # step 5 restored
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(bb_params))
  assert _snapshot(workdir) == before  # a source workdir is only read


# ----------------------------------------------- 4. checks before compiling ---
def _smoke_finetune(data_dir, **overrides):
  c = configs.load('finetune_synthetic', 'smoke')
  c.data.dir = data_dir
  c.init = 'random'
  for key, value in overrides.items():
    node = c
    *parents, last = key.split('.')
    for p in parents:
      node = node[p]
    node[last] = value
  return c


@pytest.fixture(scope='module')
def built(data_dir):
  from skel_jax import input_pipeline

  input_pipeline.ensure_built(_smoke_finetune(data_dir).data)
  return data_dir


def _fails_early(config, tmp_path, *fragments):
  from skel_jax import config_validation
  from skel_jax import main as main_lib

  workdir = tmp_path / 'ft'
  with pytest.raises(config_validation.ConfigError) as e:
    main_lib.run(config, str(workdir))
  msg = str(e.value)
  assert '\n' not in msg
  for fragment in fragments:
    assert fragment in msg, msg
  assert not workdir.exists()  # nothing written, nothing compiled
  return msg


def test_pad_length_is_checked_against_the_dataset(built, tmp_path):
  # The smoke val split's longest sequence has 128 frames.
  _fails_early(
    _smoke_finetune(built, **{'data.pad_length': 100}),
    tmp_path,
    "config.data.pad_length=100: split 'val' has a 128-frame "
    'sequence (val_00007); set --config.data.pad_length=128',
  )


def test_pad_length_without_recorded_lengths_reads_them(built, tmp_path):
  # A dataset built before lengths were recorded: they are read instead.
  import shutil

  data_dir = str(tmp_path / 'old_data')
  shutil.copytree(built, data_dir)
  meta = os.path.join(
    data_dir, 'synthetic_skeleton', 'smoke', '1.0.0', 'metadata.json'
  )
  with open(meta) as f:
    metadata = json.load(f)
  del metadata['split_stats']
  with open(meta, 'w') as f:
    json.dump(metadata, f)
  _fails_early(
    _smoke_finetune(data_dir, **{'data.pad_length': 100}),
    tmp_path,
    "split 'val' has a 128-frame sequence (val_00007)",
  )


def test_training_split_lengths_crops_and_labelled_subset(built, tmp_path):
  from skel_jax import input_pipeline

  # Smoke splits: 'train' sequences have <= 124 frames, 'val' <= 128.
  c = _smoke_finetune(
    built,
    **{
      'data.pad_length': 126,
      'data.eval_split': 'train',
      'data.train_split': 'val',
    },
  )
  _fails_early(
    c,
    tmp_path,
    "split 'val' has a 128-frame sequence",
    'or train on crops with --config.data.train_window',
  )
  info = input_pipeline.ensure_built(c.data)
  c.data.train_window = 64  # crops: long training sequences are fine
  input_pipeline.check_localization_data(c, info)
  # Only the labelled sequences count.
  c.data.train_window = 0
  c.label_fraction = 0.25
  labeled = input_pipeline.labeled_subset(16, 0.25, c.seed)
  stats = input_pipeline.split_stats(c.data, info, 'val', labeled)
  assert stats['max_frames'] < 128
  c.data.pad_length = max(stats['max_frames'], 124)
  input_pipeline.check_localization_data(c, info)


def test_missing_split_and_dataset(built, tmp_path):
  _fails_early(
    _smoke_finetune(built, **{'data.eval_split': 'test'}),
    tmp_path,
    "config.data.eval_split='test'",
    "splits ['pretrain', 'train', 'val']",
  )
  c = configs.load('finetune_pkummd', 'smoke')
  c.data.dir = str(tmp_path / 'no_data')
  c.init = 'random'
  _fails_early(
    c,
    tmp_path,
    'dataset pku_mmd/v1_xsub not found',
    'build it first: python -m skel_jax.build_data '
    f'--dataset=pku_mmd/v1_xsub --data_dir={c.data.dir} '
    '--manual_dir=',
  )


def test_unreadable_pretrained_workdir_fails_before_writing(
  pretrained, built, tmp_path
):
  from skel_jax import main as main_lib

  source = _copy(pretrained, tmp_path / 'pre')
  for step in _saved(source):
    corrupt(os.path.join(source, 'checkpoints', str(step)))
  c = _smoke_finetune(built, init='pretrained', pretrain_workdir=source)
  workdir = tmp_path / 'ft'
  with pytest.raises(checkpoint.NoReadableCheckpointError):
    main_lib.run(c, str(workdir))
  assert not workdir.exists()
