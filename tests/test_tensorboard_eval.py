"""Evaluation results, images and hyperparameters reach TensorBoard (issue 13)."""

import glob
import os
import struct

import ml_collections
import numpy as np
import pytest

from skel_jax import plotting
from skel_jax import tensorboard

pytest.importorskip('tensorboardX')


def _events(logdir):
  from tensorboardX.proto import event_pb2

  out = []
  for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
    with open(path, 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos : pos + 8])
      out.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length]))
      pos += 12 + length + 4
  return out


def _by_kind(logdir):
  scalars, images, texts, plugins = {}, set(), set(), set()
  for ev in _events(logdir):
    for v in ev.summary.value:
      if v.HasField('simple_value'):
        scalars[v.tag] = (ev.step, v.simple_value)
      elif v.HasField('image'):
        images.add((v.tag, ev.step))
      if v.metadata.plugin_data.plugin_name:
        plugins.add((v.metadata.plugin_data.plugin_name, v.tag))
      if v.metadata.plugin_data.plugin_name == 'text':
        texts.add(v.tag)
  return scalars, images, texts, plugins


def test_log_evaluation_writes_results_images_and_hparams(tmp_path):
  workdir = str(tmp_path)
  names = ['walk', 'wave', 'background']
  result = {
    'iou': {0.1: 60.0, 0.5: 40.0},
    'mean': 50.0,
    'frame_accuracy': 0.75,
    'per_class': {0: {0.1: 70.0, 0.5: 50.0}, 1: {0.1: 50.0, 0.5: 30.0}},
    'steps': 120,
  }
  png = plotting.plot_confusion(
    str(tmp_path / 'confusion.png'), np.eye(3, dtype=int), names
  )
  config = ml_collections.ConfigDict(
    {'optimizer': {'lr': 0.1}, 'protocol': 'linear', 'iou': (0.1, 0.5)}
  )
  tensorboard.log_evaluation(
    workdir,
    120,
    result,
    names,
    images={
      'eval/confusion': png,
      'eval/timelines': str(tmp_path / 'none.png'),
    },
    config=config,
    text='    table',
  )
  scalars, images, texts, plugins = _by_kind(os.path.join(workdir, 'tb'))
  assert scalars['eval/mAP_iou_0.1'] == (120, 60.0)
  assert scalars['eval/mAP_iou_0.5'] == (120, 40.0)
  assert scalars['eval/mAP_mean'] == (120, 50.0)
  assert scalars['eval/frame_accuracy'] == (120, 0.75)
  assert scalars['eval/AP_class/walk'] == (120, 60.0)
  assert scalars['eval/AP_class/wave'] == (120, 40.0)
  assert images == {('eval/confusion', 120)}  # a missing file is skipped
  assert 'eval/results/text_summary' in texts
  assert ('hparams', '_hparams_/experiment') in plugins
  assert ('hparams', '_hparams_/session_start_info') in plugins


def test_flatten_config_gives_hparam_types():
  config = ml_collections.ConfigDict(
    {'a': {'b': 1, 'c': (1, 2)}, 'd': None, 'e': True, 'f': 'x', 'g': 0.5}
  )
  assert tensorboard.flatten_config(config) == {
    'a.b': 1,
    'a.c': '(1, 2)',
    'd': 'None',
    'e': True,
    'f': 'x',
    'g': 0.5,
  }


def test_finetune_write_results_logs_to_tensorboard(tmp_path):
  """The finetune stage's result writer (called at every evaluation) puts the
  mAP, the images and the hyperparameters into WORKDIR/tb."""
  from skel_jax import finetune

  names = ['walk', 'wave', 'background']
  labels = np.array([2] * 5 + [0] * 10 + [1] * 10 + [2] * 5)
  probs = np.eye(3)[labels] * 0.9 + 0.05
  predictions = [{'id': 'v0', 'labels': labels, 'probs': probs}]
  config = ml_collections.ConfigDict(
    {
      'protocol': 'linear',
      'eval': {
        'num_plot_sequences': 1,
        'animate': False,
        'iou_thresholds': (0.1, 0.5),
      },
    }
  )
  gt = {'v0': [(0, 5, 15), (1, 15, 25)]}
  pred = {'v0': [(0, 5, 15, 0.9), (1, 15, 25, 0.8)]}
  result = {
    'iou': {0.1: 100.0, 0.5: 100.0},
    'mean': 100.0,
    'frame_accuracy': 1.0,
    'per_class': {0: {0.1: 100.0, 0.5: 100.0}, 1: {0.1: 100.0, 0.5: 100.0}},
    'confusion': np.diag([10, 10, 10]).tolist(),
    'metric': 'exact',
    'steps': 7,
  }
  finetune.write_results(
    str(tmp_path), result, gt, pred, predictions, names, 2, config
  )
  scalars, images, _, plugins = _by_kind(str(tmp_path / 'tb'))
  assert scalars['eval/mAP_mean'] == (7, 100.0)
  assert {t for t, _ in images} == {'eval/timelines', 'eval/confusion'}
  assert ('hparams', '_hparams_/experiment') in plugins
