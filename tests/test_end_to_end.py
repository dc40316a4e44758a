"""End to end on the smoke synthetic dataset: build -> pretrain -> localize -> mAP,
through the same ``main.run`` entry point the CLI uses (8 simulated devices)."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

import configs
from skel_jax import activitynet
from skel_jax import finetune
from skel_jax import main as main_lib
from skel_jax import optim

# Module fixtures/caches are shared: keep this file on one xdist worker.
pytestmark = pytest.mark.xdist_group('end_to_end')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory, data_dir):
  config = configs.load('pretrain_synthetic', 'smoke')
  config.data.dir = data_dir
  config.num_steps = 12
  workdir = str(tmp_path_factory.mktemp('pretrain'))
  main_lib.run(config, workdir)
  return config, workdir


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_pretrain_writes_metrics_and_checkpoint(pretrained):
  config, workdir = pretrained
  records = _jsonl(os.path.join(workdir, 'metrics.jsonl'))
  assert [r['step'] for r in records] == [5, 10, 12]
  for r in records:
    assert np.isfinite(r['loss']) and np.isfinite(r['loss_snippet'])
    np.testing.assert_allclose(
      r['loss'], r['loss_global'] + 1.5 * r['loss_snippet'], rtol=1e-5
    )
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '12'))
  with open(os.path.join(workdir, 'versions.json')) as f:
    assert json.load(f)['devices'] == 8


@pytest.mark.parametrize(
  'protocol,head',
  [
    ('linear', 'ufusion'),
    ('linear_fusion', 'ufusion'),
    ('finetune', 'ufusion'),
    ('knn', 'ufusion'),
    ('finetune', 'upsample'),
  ],
)
def test_localization_from_pretrained_backbone(
  pretrained, data_dir, tmp_path, protocol, head
):
  _, pre_dir = pretrained
  config = configs.load('finetune_synthetic', 'smoke')
  config.data.dir = data_dir
  config.pretrain_workdir = pre_dir
  config.protocol = protocol
  config.model.head = head
  config.label_fraction = 0.5
  # One run trains long enough to beat predicting background everywhere.
  floor_run = (protocol, head) == ('finetune', 'ufusion')
  config.num_steps = 48 if floor_run else 6

  # Only the backbone comes from the checkpoint; heads are fresh.
  tx = optim.make_optimizer(config.optimizer, 1e-3)
  _, state = finetune.initial_state(config, tx, num_classes=10)
  params = finetune.join_params(state['trainable'], state['frozen'], protocol)
  bb, _ = finetune.load_pretrained_backbone(pre_dir)
  jax.tree.map(
    np.testing.assert_array_equal, nnx.to_pure_dict(params['backbone']), bb
  )

  workdir = str(tmp_path)
  main_lib.run(config, workdir)
  with open(os.path.join(workdir, 'results.json')) as f:
    result = json.load(f)
  assert result['protocol'] == protocol
  assert result['label_fraction'] == 0.5
  assert result['num_labeled_sequences'] == 16  # half of the 32 train sequences
  assert set(result['iou']) == {'0.1', '0.2', '0.3', '0.4', '0.5'}
  for v in list(result['iou'].values()) + [result['mean']]:
    assert 0.0 <= v <= 100.0
  assert np.isclose(result['mean'], np.mean(list(result['iou'].values())))
  assert 0.0 <= result['frame_accuracy'] <= 1.0
  if floor_run:
    # Guards against inputs and labels that do not line up (shuffled,
    # shifted, cropped apart): the model then learns the majority class, i.e.
    # the background-only accuracy (0.46 here; 48 steps reach 0.54).
    confusion = np.asarray(result['confusion'])
    background_only = confusion[-1].sum() / confusion.sum()
    assert result['frame_accuracy'] > background_only + 0.04, (
      result['frame_accuracy'],
      background_only,
    )
  # Predictions are exported in the ActivityNet layout and re-score the same.
  rescored = activitynet.evaluate_files(
    os.path.join(workdir, 'gt.json'), os.path.join(workdir, 'predictions.json')
  )
  np.testing.assert_allclose(rescored['mean'], result['mean'], rtol=1e-9)
  assert os.path.getsize(os.path.join(workdir, 'timelines.png')) > 1000
  assert os.path.getsize(os.path.join(workdir, 'skeleton.gif')) > 1000
  assert os.path.getsize(os.path.join(workdir, 'confusion.png')) > 1000
  if protocol != 'knn':
    assert any(
      f.startswith('events.out.tfevents')
      for f in os.listdir(os.path.join(workdir, 'tb'))
    )


def test_demo_pipeline_writes_table(data_dir, tmp_path, monkeypatch):
  config = configs.load('demo', 'smoke')
  config.data.dir = data_dir
  config.methods = ('random_init', 'snippet_moco')
  config.protocols = ('linear',)
  config.pretrain.num_steps = 4
  config.finetune.num_steps = 4
  # A relative workdir, as `make demo` passes (--workdir=runs/demo): its
  # finetune stages once failed to read the pretraining checkpoints.
  monkeypatch.chdir(tmp_path)
  main_lib.run(config, 'demo')
  tmp_path = tmp_path / 'demo'
  with open(tmp_path / 'results.json') as f:
    saved = json.load(f)
  rows = saved['rows']
  assert [(r['method'], r['protocol']) for r in rows] == [
    ('random_init', 'linear'),
    ('snippet_moco', 'linear'),
  ]
  for r in rows:
    assert r['label_fraction'] == 0.2
    assert set(r['map']) == {'0.1', '0.2', '0.3', '0.4', '0.5', 'mean'}
  assert (tmp_path / 'results.md').exists()


def test_demo_bases_variant_builds_each_method_config():
  from skel_jax import config_validation
  from skel_jax import demo

  config = configs.load('demo', 'bases,smoke')
  config_validation.validate(config, 'unused')
  assert config.protocols == ('linear',)
  for method in config.methods:
    base, snippet = demo.PRETRAINED[method]
    c = demo._pretrain_config(config, method)  # pylint: disable=protected-access
    assert c.pretrain.base == base
    assert (c.pretrain.snippet_weight > 0) == snippet
    # One dataset for every method; RVTCLR keeps its longer windows.
    assert (c.data.name, c.data.config, c.data.dir) == (
      config.data.name,
      config.data.config,
      config.data.dir,
    )
    assert c.data.clip_len == (2 if base == 'rvtclr' else 1) * 64
    config_validation.validate(c)
    assert (c.pretrain.mining_epoch >= 0) == (base != 'skeletonclr')


def test_linear_probe_trains_only_the_classifier(
  pretrained, data_dir, tmp_path
):
  """The released probe: backbone and fusion module frozen (BN statistics
  included), only the per-frame classifier moves."""
  _, pre_dir = pretrained
  config = configs.load('finetune_synthetic', 'smoke')
  config.data.dir = data_dir
  config.pretrain_workdir = pre_dir
  config.protocol = 'linear'
  # One epoch of round(0.3 * 32) = 10 labelled sequences in batches of 8:
  # ceil(10 / 8) = 2 steps (the last batch wraps around, not dropped).
  config.num_steps = 0
  config.num_epochs = 1
  config.label_fraction = 0.3
  tx = optim.make_optimizer(config.optimizer, 1e-2)
  _, before = finetune.initial_state(config, tx, num_classes=10)
  before = jax.device_get(before)
  result = main_lib.run(config, str(tmp_path))
  assert (result['num_labeled_sequences'], result['steps']) == (10, 2)
  assert os.path.isdir(tmp_path / 'checkpoints' / '2')
  from skel_jax import weights

  _, _, params1, stats = weights.restore_workdir(str(tmp_path))
  params0 = nnx.to_pure_dict(
    finetune.join_params(before['trainable'], before['frozen'], 'linear')
  )
  assert not np.allclose(
    params0['head']['classifier']['kernel'],
    params1['head']['classifier']['kernel'],
  )
  del params0['head']['classifier'], params1['head']['classifier']
  jax.tree.map(np.testing.assert_array_equal, params0, params1)
  jax.tree.map(
    np.testing.assert_array_equal,
    nnx.to_pure_dict(before['batch_stats']),
    stats,
  )
