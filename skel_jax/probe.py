r"""Frozen-feature probe: does a pretrained backbone encode content or position?

  python -m skel_jax.probe --workdir=runs/pre            # a pretraining workdir
  python -m skel_jax.probe --workdir=runs/pre --out=/tmp/probe.json

Runs the frozen backbone (inference-mode BatchNorm) on whole labelled
sequences and reports, for the last unit's features (the representation the
contrastive losses train, joint/person-averaged, one vector per backbone
step):

- ``ridge_frame_acc`` / ``ridge_class_acc``: a closed-form ridge classifier
  fitted on the train split's frames and scored on the eval split's frames
  (frame accuracy, and the mean per-class recall, background included);
- ``var_time``: the share of feature variance explained by the time since the
  sequence start (one-way ANOVA R^2 over backbone steps); released snippet
  MoCo drives it to ~0.7, a content representation keeps it low;
- ``var_label``: the share explained by the frame's action label.

Cheap (one forward pass per sequence, a C x C solve), so every pretraining run
writes ``probe.json`` at its end (``config.probe``) and the study records it.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from skel_jax import input_pipeline
from skel_jax import weights


def _group_share(x, groups):
  """Between-group sum of squares / total sum of squares of rows x (n, C)."""
  centred = x - x.mean(0)
  total = float(np.sum(centred**2))
  between = 0.0
  for g in np.unique(groups):
    rows = centred[groups == g]
    between += len(rows) * float(np.sum(rows.mean(0) ** 2))
  return between / max(total, 1e-12)


def last_unit_fn(backbone):
  """Jitted (N, M, T, V, 3) -> (N, T', C): last unit, joint/person mean."""

  @jax.jit
  def forward(x):
    n, m, t, v, c = x.shape
    last = backbone(x.reshape(n * m, t, v, c), False)[-1]
    f = jnp.mean(last, axis=2)
    return jnp.mean(f.reshape(n, m, *f.shape[1:]), axis=1)

  return forward


def step_features(forward, data_cfg, split, batch_size=16, limit=None):
  """Last-unit features (``forward = last_unit_fn(backbone)``) of every valid
  backbone step of a split.

  Returns (features (n, C) float64, step index (n,), label of the step's
  centre frame (n,)). Steps whose centre frame is padding are dropped.
  """
  feats, times, labels = [], [], []
  for batch in input_pipeline.eval_batches(
    data_cfg, split, global_batch=batch_size, limit=limit
  ):
    out = np.asarray(forward(jnp.asarray(batch['x'])), np.float64)
    t_frames, t_steps = batch['x'].shape[2], out.shape[1]
    stride = t_frames / t_steps
    centre = np.minimum(
      (np.arange(t_steps) * stride + stride / 2).astype(int), t_frames - 1
    )
    for i in np.flatnonzero(batch['valid']):
      keep = centre < int(batch['length'][i])
      feats.append(out[i][keep])
      times.append(np.arange(t_steps)[keep])
      labels.append(batch['labels'][i][centre[keep]])
  return np.concatenate(feats), np.concatenate(times), np.concatenate(labels)


def ridge_fit(x, y, num_outputs, l2=1e-3):
  """Closed-form ridge regression to one-hot targets on standardised
  features with a bias; returns a predict function (n, C) -> labels."""
  mean, std = x.mean(0), x.std(0) + 1e-8
  design = lambda z: np.concatenate([(z - mean) / std, np.ones((len(z), 1))], 1)
  a = design(x)
  targets = np.eye(num_outputs)[y]
  reg = l2 * len(a) * np.eye(a.shape[1])
  reg[-1, -1] = 0.0  # no penalty on the bias
  w = np.linalg.solve(a.T @ a + reg, a.T @ targets)
  return lambda z: np.argmax(design(z) @ w, axis=1)


def probe_backbone(
  backbone,
  data_cfg,
  num_outputs,
  train_split,
  eval_split,
  batch_size=16,
  limit=None,
):
  """The probe's numbers (see the module docstring) for one backbone."""
  forward = last_unit_fn(backbone)
  x_tr, _, y_tr = step_features(
    forward, data_cfg, train_split, batch_size, limit
  )
  x_ev, t_ev, y_ev = step_features(
    forward, data_cfg, eval_split, batch_size, limit
  )
  pred = ridge_fit(x_tr, y_tr, num_outputs)(x_ev)
  recalls = [np.mean(pred[y_ev == c] == c) for c in np.unique(y_ev)]
  return {
    'ridge_frame_acc': float(np.mean(pred == y_ev)),
    'ridge_class_acc': float(np.mean(recalls)),
    'var_time': _group_share(x_ev, t_ev),
    'var_label': _group_share(x_ev, y_ev),
    'train_steps': int(len(x_tr)),
    'eval_steps': int(len(x_ev)),
  }


def probe_pretrain_state(config, state, out_path=None):
  """Probe of a pretraining run's query backbone (``config.probe``)."""
  limit = config.get('probe', {}).get('limit', 0)  # older workdirs: none
  data_cfg = config.data
  num_outputs = len(input_pipeline.class_names(data_cfg))
  backbone = weights.backbone_with(
    config.model,
    jax.tree.map(jnp.asarray, jax.device_get(state['params']['backbone'])),
    jax.tree.map(jnp.asarray, jax.device_get(state['batch_stats']['backbone'])),
    source='the pretraining state',
  )
  result = probe_backbone(
    backbone,
    data_cfg,
    num_outputs,
    data_cfg.train_split,
    data_cfg.eval_split,
    limit=limit or None,
  )
  if out_path and jax.process_index() == 0:
    with open(out_path, 'w') as f:
      json.dump(result, f, indent=2)
  return result


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top

  from skel_jax import cli  # pylint: disable=g-import-not-at-top

  del argv
  cli.apply_verbosity()
  f = flags.FLAGS
  config, _, params, stats = weights.restore_workdir(
    f.workdir, backbone_only=True
  )
  if f.data_dir:
    cli.set_data_dir(config, f.data_dir)
  state = {
    'params': {'backbone': params['backbone']},
    'batch_stats': {'backbone': stats['backbone']},
  }
  out = f.out or os.path.join(f.workdir, 'probe.json')
  result = probe_pretrain_state(config, state, out)
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  from skel_jax import cli  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string(
    'workdir', None, 'Pretraining run directory to probe (input).'
  )
  flags.DEFINE_string('out', '', 'Output JSON (default: WORKDIR/probe.json).')
  flags.DEFINE_string(
    'data_dir',
    None,
    'TFDS data directory (as in build_data / main); default: the one the '
    'run recorded.',
  )
  cli.extend_help(only=False)
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
