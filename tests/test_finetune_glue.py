"""The glue between the localizer and the metrics, on tiny arrays: the masked
frame loss, eval settings reaching the decoder, frame probabilities -> mAP /
accuracy / confusion, the LR schedule and step arithmetic, KNN frame features.
References are NumPy or worked by hand."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from skel_jax import config_defaults
from skel_jax import finetune
from skel_jax import knn
from skel_jax import optim
from skel_jax import postprocess
from skel_jax import pretrain

# ------------------------------------------------------ masked frame CE ----


def test_frame_cross_entropy_averages_labelled_frames_only():
  """Guards against padded frames (label -1) entering the loss or the mean."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 6, 4)).astype(np.float32)
  labels = np.array([[0, 3, 1, -1, -1, -1], [2, 2, -1, 0, -1, -1]], np.int32)
  z = logits.astype(np.float64)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  valid = np.argwhere(labels >= 0)
  want = -np.mean([logp[n, t, labels[n, t]] for n, t in valid])
  got = finetune.frame_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  # Whatever the logits of padded frames, the loss is the same.
  noisy = logits + 50.0 * (labels < 0)[..., None] * rng.normal(
    size=logits.shape
  )
  np.testing.assert_allclose(
    float(
      finetune.frame_cross_entropy(
        jnp.asarray(noisy, jnp.float32), jnp.asarray(labels)
      )
    ),
    want,
    rtol=1e-6,
  )
  # A batch of padding only: 0, not NaN.
  assert (
    float(
      finetune.frame_cross_entropy(
        jnp.asarray(logits), jnp.full((2, 6), -1, jnp.int32)
      )
    )
    == 0.0
  )


# ------------------------------------------------- eval -> DecodeConfig ----


def test_decode_config_carries_every_eval_setting():
  """Guards against eval settings silently dropped on the way to the
  decoder (line_quirks, smooth_kernel and activity_threshold were)."""
  e = config_defaults.eval_config()
  # The config's defaults are the decoder's defaults.
  assert finetune.decode_config(e) == postprocess.DecodeConfig()
  e.decoder = 'jhang'
  e.thresholds = (0.2, 0.3)
  e.min_length = 5
  e.outer_ratio = 0.5
  e.outer_weight = 0.1
  e.nms_threshold = 0.7
  e.line_quirks = True
  e.smooth_kernel = 3
  e.activity_threshold = 0.25
  want = {
    'method': 'jhang',
    'thresholds': (0.2, 0.3),
    'min_length': 5,
    'outer_ratio': 0.5,
    'outer_weight': 0.1,
    'nms_threshold': 0.7,
    'line_quirks': True,
    'smooth_kernel': 3,
    'activity_threshold': 0.25,
  }
  # Every decoder field is settable from the config (a new field needs a key).
  assert set(want) == {
    f.name for f in dataclasses.fields(postprocess.DecodeConfig)
  }
  assert dataclasses.asdict(finetune.decode_config(e)) == want


def test_evaluation_uses_the_configured_jhang_settings():
  """The jhang activity threshold and smoothing width reach the decoder: a
  frame of activity 0.4 splits the run at threshold 0.5 (not at 0.35) when
  unsmoothed; the k = 2 mean filter (frames [t - 2, t + 2)) bridges it."""
  labels = np.array([2] * 3 + [1] * 10 + [2] * 3)
  probs = np.zeros((16, 3))
  probs[:, 2] = 1.0
  probs[3:13] = [0.1, 0.8, 0.1]
  probs[8] = [0.1, 0.3, 0.6]  # one uncertain frame inside the action
  e = config_defaults.eval_config()
  e.decoder = 'jhang'
  pred = {'id': 'v', 'probs': probs, 'labels': labels}

  def segments(k, threshold):
    e.smooth_kernel, e.activity_threshold = k, threshold
    _, _, segs = finetune.evaluate_predictions([pred], 2, e)
    assert all(s[0] == 1 for s in segs['v'])
    return [s[1:3] for s in segs['v']]

  assert segments(0, 0.5) == [(3, 8), (9, 13)]
  assert segments(0, 0.35) == [(3, 13)]
  # k = 2: frame 3 averages frames 1..4 (background 0.55: inactive at 0.5),
  # frame 8 frames 6..9 (background 0.225: active).
  assert segments(2, 0.5) == [(4, 13)]


# ------------------------------------- frame probabilities -> metrics ----


def _videos():
  """Two videos, 3 classes + background (3); every action >= 3 frames."""
  bg = 3
  a = [bg, bg, 0, 0, 0, 0, bg, 1, 1, 1, 1, 1, bg, bg, 2, 2, 2, bg]
  b = [2, 2, 2, 2, bg, bg, bg, 0, 0, 0, bg, 1, 1, 1]
  return [np.array(a), np.array(b)]


def test_one_hot_probabilities_score_perfectly():
  preds = [
    {'id': f'v{i}', 'labels': lab, 'probs': np.eye(4)[lab]}
    for i, lab in enumerate(_videos())
  ]
  result, gt, pred = finetune.evaluate_predictions(
    preds, 3, config_defaults.eval_config()
  )
  assert gt == {
    'v0': [(0, 2, 6), (1, 7, 12), (2, 14, 17)],
    'v1': [(2, 0, 4), (0, 7, 10), (1, 11, 14)],
  }
  for vid, segs in gt.items():
    assert sorted(p[:3] for p in pred[vid]) == sorted(segs)
  assert set(result['iou']) == {0.1, 0.2, 0.3, 0.4, 0.5}
  assert all(v == 100.0 for v in result['iou'].values())
  assert result['mean'] == 100.0
  assert result['frame_accuracy'] == 1.0
  counts = np.bincount(np.concatenate(_videos()), minlength=4)
  np.testing.assert_array_equal(result['confusion'], np.diag(counts))


def test_background_only_probabilities():
  """Rows of the confusion are true labels, columns predictions."""
  videos = _videos()
  preds = [
    {'id': f'v{i}', 'labels': lab, 'probs': np.eye(4)[np.full_like(lab, 3)]}
    for i, lab in enumerate(videos)
  ]
  result, _, pred = finetune.evaluate_predictions(
    preds, 3, config_defaults.eval_config()
  )
  assert pred == {'v0': [], 'v1': []}
  assert result['mean'] == 0.0
  counts = np.bincount(np.concatenate(videos), minlength=4)
  np.testing.assert_allclose(result['frame_accuracy'], counts[3] / counts.sum())
  want = np.zeros((4, 4), int)
  want[:, 3] = counts
  np.testing.assert_array_equal(result['confusion'], want)


# ------------------------------------------- schedules and step counts ----


def test_warmup_step_schedule_hand_values():
  """Linear warm-up (step + 1) / W, then x0.1 from each decay step on."""
  f = optim.warmup_step_schedule(0.1, 4, [6, 8])
  want = [0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
  np.testing.assert_allclose([float(f(s)) for s in range(10)], want, rtol=1e-6)
  g = optim.warmup_step_schedule(0.5, 0, [2])
  np.testing.assert_allclose(
    [float(g(s)) for s in range(4)], [0.5, 0.5, 0.05, 0.05], rtol=1e-6
  )


def test_epoch_schedule_rounds_as_the_release_loaders():
  """70 sequences in batches of 16: pretraining counts 4 batches an epoch
  (the release's loader drops the partial batch), localization 5 (it keeps
  it); epochs convert to steps through that."""
  c = config_defaults.pretrain_config()
  c.batch_size = 16
  c.optimizer.lr = 0.2
  c.num_steps = 0
  c.num_epochs = 5
  c.warmup_epochs = 1.5
  c.lr_decay_epochs = (3,)
  schedule, total, per_epoch = optim.epoch_schedule(c, 70, drop_last=True)
  assert (per_epoch, total) == (4, 20)
  # Warm-up over int(1.5 * 4) = 6 steps, decay at step 12.
  np.testing.assert_allclose(
    [float(schedule(s)) for s in (0, 5, 6, 11, 12)],
    [0.2 / 6, 0.2, 0.2, 0.2, 0.02],
    rtol=1e-6,
  )
  assert optim.epoch_schedule(c, 70, drop_last=False)[1:] == (25, 5)
  c.num_steps = 7
  assert optim.epoch_schedule(c, 70, drop_last=True)[1] == 7
  # Mining starts after mining_epoch + 1 full epochs; -1 never.
  c.pretrain.mining_epoch = 2
  assert pretrain.mining_start_step(c.pretrain, 4) == 12
  c.pretrain.mining_epoch = -1
  assert pretrain.mining_start_step(c.pretrain, 4) == -1


# ---------------------------------------------------- KNN frame features ----


class _StubLocalizer:
  """Fixed backbone taps; records the BN mode it was asked for."""

  def __init__(self, taps):
    self.taps, self.calls = taps, []

  def taps_of(self, x, train):
    self.calls.append(train)
    assert x.shape[2] == 8
    return [jnp.asarray(t) for t in self.taps]


def test_knn_frame_features_resize_concatenate_normalise():
  rng = np.random.default_rng(1)
  taps = [
    rng.normal(size=(2, 8, 3)),
    rng.normal(size=(2, 4, 2)),
    rng.normal(size=(2, 2, 5)),
  ]
  model = _StubLocalizer([t.astype(np.float32) for t in taps])
  got = np.asarray(knn.frame_features(model, jnp.zeros((2, 1, 8, 25, 3))))
  assert model.calls == [False]  # frozen backbone: inference-mode BN
  # Nearest resize: frame i reads step floor(i * L / 8) of an L-step tap.
  up = [t[:, np.arange(8) * t.shape[1] // 8] for t in taps]
  f = np.concatenate(up, -1)
  want = f / np.linalg.norm(f, axis=-1, keepdims=True)
  assert got.shape == (2, 8, 10)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


if __name__ == '__main__':
  pytest.main([__file__])
