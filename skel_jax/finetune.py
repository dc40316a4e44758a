"""Stage 2: frame-level localization (full finetune or linear probe) + evaluation.

Only backbone weights (and their BN statistics) come from a pretraining run;
heads start from scratch. Protocols (``skel_jax.protocols``): finetune
(everything trains), linear (the released probe: the per-frame classifier
only), linear_fusion (fusion module + classifier), knn (nothing trains).
Frozen parameters are not in the trainable tree: they get no gradients and no
optimizer state.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from skel_jax import checkpoint
from skel_jax import config_validation
from skel_jax import input_pipeline
from skel_jax import loop
from skel_jax import metrics as metrics_lib
from skel_jax import optim
from skel_jax import postprocess
from skel_jax import protocols
from skel_jax import train_utils
from skel_jax import weights
from skel_jax.models import Localizer


# ---------------------------------------------------------------------------
# Model, pretrained weights, trainable subset.
# ---------------------------------------------------------------------------
def build_model(config, num_classes):
  """The localizer; ``num_classes`` excludes background (K + 1 outputs)."""
  # init_seed >= 0 draws the initial weights apart from ``seed`` (which also
  # picks the labelled subset and the data order): the study varies a random
  # init's weights while every method sees the same labels.
  seed = config.get('init_seed', -1)
  return Localizer(
    config.model, num_classes, rngs=nnx.Rngs(seed if seed >= 0 else config.seed)
  )


def check_pretrained_source(config):
  """ConfigError (one line) when ``init=pretrained`` names a source that
  cannot give this model its backbone (reads only small files)."""
  if config.init != 'pretrained':
    return
  problem = weights.source_problem(config.pretrain_workdir, config.model)
  if problem:
    config_validation.fail('pretrain_workdir', config.pretrain_workdir, problem)


def load_pretrained_backbone(path):
  """Backbone params and BN statistics (nested dicts) from a pretraining
  workdir (query encoder) or from an export directory (``skel_jax.export``)."""
  return weights.backbone_variables(path)


def initial_state(config, tx, num_classes, restore_backbone=True):
  """(graphdef, state): backbone from the pretraining source, fresh heads."""
  model = build_model(config, num_classes)
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  if restore_backbone and config.init == 'pretrained':
    bb_params, bb_stats = load_pretrained_backbone(config.pretrain_workdir)
    src = config.pretrain_workdir
    checkpoint.check_same_shapes(
      src, nnx.to_pure_dict(params['backbone']), bb_params
    )
    checkpoint.check_same_shapes(
      src, nnx.to_pure_dict(stats['backbone']), bb_stats
    )
    nnx.replace_by_pure_dict(
      params['backbone'], jax.tree.map(jnp.asarray, bb_params)
    )
    nnx.replace_by_pure_dict(
      stats['backbone'], jax.tree.map(jnp.asarray, bb_stats)
    )
  trainable, frozen = split_trainable(params, config.protocol)
  state = {
    'step': jnp.zeros((), jnp.int32),
    'trainable': trainable,
    'frozen': frozen,
    'batch_stats': stats,
    'opt_state': tx.init(trainable),
    'rng': jax.random.PRNGKey(config.seed),
    **train_utils.nonfinite_fields(),
  }
  return graphdef, state


def split_trainable(params, protocol):
  """(trainable, frozen) States with full paths; frozen is None when all train."""
  prefix = protocols.PROTOCOLS[protocol]
  if not prefix:
    return params, None
  return nnx.split_state(
    params, lambda path, _: tuple(path[: len(prefix)]) == prefix, ...
  )


def join_params(trainable, frozen, protocol):
  del protocol  # the split is recorded in the two trees' paths
  return trainable if frozen is None else nnx.merge_state(frozen, trainable)


# ---------------------------------------------------------------------------
# Update and inference steps.
# ---------------------------------------------------------------------------
def forward(model, x, train, protocol, dropout_key=None):
  if protocol == 'finetune':
    return model(x, train=train, dropout_key=dropout_key)
  # Probes: the frozen backbone runs with its BN in inference mode.
  taps = [jax.lax.stop_gradient(t) for t in model.taps_of(x, train=False)]
  # Under `linear` the frozen fusion module's BN is in inference mode too.
  return model.head(
    taps, train and protocol == 'linear_fusion', length=x.shape[2]
  )


def frame_cross_entropy(logits, labels):
  """Mean softmax CE over non-padded frames (label -1 = padding)."""
  mask = labels >= 0
  ce = optax.softmax_cross_entropy_with_integer_labels(
    logits.astype(jnp.float32), jnp.maximum(labels, 0)
  )
  return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1)


def train_step(state, batch, *, graphdef, tx, protocol, schedule):
  def loss_fn(trainable, batch_stats):
    params = join_params(trainable, state['frozen'], protocol)
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    logits = forward(
      model,
      batch['x'],
      True,
      protocol,
      jax.random.fold_in(state['rng'], state['step']),
    )
    loss = frame_cross_entropy(logits, batch['labels'])
    mask = batch['labels'] >= 0
    acc = jnp.sum((jnp.argmax(logits, -1) == batch['labels']) * mask) / (
      jnp.maximum(jnp.sum(mask), 1)
    )
    return loss, (
      {'loss': loss, 'frame_acc': acc},
      nnx.state(model, nnx.BatchStat),
    )

  grads, (metrics, stats) = jax.grad(loss_fn, has_aux=True)(
    state['trainable'], state['batch_stats']
  )
  updates, opt_state = tx.update(grads, state['opt_state'], state['trainable'])
  trainable = optax.apply_updates(state['trainable'], updates)
  metrics['lr'] = schedule(state['step'])
  new_state = dict(
    state,
    step=state['step'] + 1,
    trainable=trainable,
    batch_stats=stats,
    opt_state=opt_state,
  )
  new_state = train_utils.guard_nonfinite(new_state, state, [metrics['loss']])
  metrics['skipped_steps'] = new_state['skipped_steps']
  return new_state, metrics


def make_train_step(graphdef, tx, protocol, schedule, mesh=None, donate=True):
  """``train_step`` jitted as training runs it (state replicated over
  ``mesh``, batch on the data axis, state donated; without a mesh plain
  ``jax.jit``). Training, the benchmark and the tests build it here."""
  fn = functools.partial(
    train_step, graphdef=graphdef, tx=tx, protocol=protocol, schedule=schedule
  )
  donate_argnums = (0,) if donate else ()
  if mesh is None:
    return jax.jit(fn, donate_argnums=donate_argnums)
  rep, dsh = train_utils.replicated(mesh), train_utils.data_sharding(mesh)
  return jax.jit(
    fn,
    in_shardings=(rep, dsh),
    out_shardings=(rep, rep),
    donate_argnums=donate_argnums,
  )


def make_predict_step(graphdef, protocol, mesh=None):
  """``predict_step`` jitted: frame probabilities sharded like the batch."""
  fn = functools.partial(predict_step, graphdef=graphdef, protocol=protocol)
  if mesh is None:
    return jax.jit(fn)
  rep, dsh = train_utils.replicated(mesh), train_utils.data_sharding(mesh)
  return jax.jit(fn, in_shardings=(rep, dsh), out_shardings=dsh)


def predict_step(state, x, *, graphdef, protocol):
  params = join_params(state['trainable'], state['frozen'], protocol)
  model = nnx.merge(graphdef, params, state['batch_stats'])
  return jax.nn.softmax(model(x, train=False).astype(jnp.float32), axis=-1)


# ---------------------------------------------------------------------------
# Evaluation: frame probabilities -> segments -> mAP.
# ---------------------------------------------------------------------------
def decode_config(eval_cfg):
  """Every ``postprocess.DecodeConfig`` field from ``eval`` (a config saved
  before a field existed gets its default)."""
  get = lambda key: eval_cfg.get(key, getattr(postprocess.DecodeConfig, key))
  return postprocess.DecodeConfig(
    thresholds=tuple(eval_cfg.thresholds),
    min_length=eval_cfg.min_length,
    outer_ratio=eval_cfg.outer_ratio,
    outer_weight=eval_cfg.outer_weight,
    nms_threshold=eval_cfg.nms_threshold,
    method=eval_cfg.decoder,
    line_quirks=bool(get('line_quirks')),
    smooth_kernel=int(get('smooth_kernel')),
    activity_threshold=float(get('activity_threshold')),
  )


def predict_split(config, state, predict_fn, dsh, split, limit=None):
  """Per-sequence frame probabilities and labels of a whole split (host NumPy)."""
  out = []
  for batch in input_pipeline.eval_batches(
    config.data, split, global_batch=config.eval.batch_size, limit=limit
  ):
    probs = input_pipeline.gather_to_host(
      predict_fn(state, input_pipeline.global_eval_input(batch['x'], dsh))
    )
    for i in np.flatnonzero(batch['valid']):
      t = int(batch['length'][i])
      sid = batch['sequence_id'][i]
      sid = sid.decode() if isinstance(sid, bytes) else str(sid)
      item = {
        'id': sid,
        'probs': probs[i, :t],
        'labels': batch['labels'][i, :t],
      }
      if len(out) < config.eval.num_plot_sequences:  # kept for the GIF
        item['skeleton'] = np.transpose(batch['x'][i, :, :t], (1, 0, 2, 3))
      out.append(item)
  return out


def evaluate_predictions(predictions, num_classes, eval_cfg):
  """mAP at the configured IoU thresholds + frame accuracy and confusion."""
  dcfg = decode_config(eval_cfg)
  gt, pred = {}, {}
  confusion = np.zeros((num_classes + 1, num_classes + 1), np.int64)
  for p in predictions:
    gt[p['id']] = postprocess.labels_to_segments(p['labels'], num_classes)
    pred[p['id']] = postprocess.decode_segments(p['probs'], dcfg, num_classes)
    np.add.at(confusion, (p['labels'], np.argmax(p['probs'], -1)), 1)
  result = metrics_lib.compute_map(
    gt,
    pred,
    iou_thresholds=tuple(eval_cfg.iou_thresholds),
    metric=eval_cfg.metric,
    num_classes=num_classes,
  )
  result['frame_accuracy'] = float(np.trace(confusion) / confusion.sum())
  result['confusion'] = confusion.tolist()
  return result, gt, pred


# ---------------------------------------------------------------------------
# Training loop.
# ---------------------------------------------------------------------------
def train_and_evaluate(config, workdir):
  """Trains the localizer, evaluates on the val split, writes results.json."""
  config_validation.validate(config, workdir)
  check_pretrained_source(config)
  train_utils.print_banner(f'{config.protocol} -> {workdir}')
  mesh = train_utils.mesh_for(config)
  rep, dsh = train_utils.replicated(mesh), train_utils.data_sharding(mesh)

  info = input_pipeline.ensure_built(config.data)
  input_pipeline.check_localization_data(config, info)  # before compiling
  names = list(info.metadata['class_names'])
  num_classes = len(names) - 1  # background is the last name
  ds, labeled = input_pipeline.finetune_dataset(
    config.data,
    config.data.train_split,
    global_batch=config.batch_size,
    label_fraction=config.label_fraction,
    seed=config.seed,
  )
  schedule, total_steps, _ = optim.epoch_schedule(
    config, len(labeled), drop_last=False
  )
  tx = optim.make_optimizer(config.optimizer, schedule)

  config.model.num_classes = num_classes  # recorded for exports
  graphdef, state = initial_state(config, tx, num_classes)
  # After the pretrained weights loaded: a failed start leaves no workdir.
  train_utils.write_run_record(workdir, config)
  state = jax.device_put(state, rep)
  ckpt, start, state = checkpoint.open_and_restore(
    workdir, config.checkpoint, state, rep, config.protocol
  )

  if config.protocol == 'knn':
    total_steps = 0
    ckpt.close()  # nothing is trained
    predict_fn = knn_predictor(
      config, graphdef, state, labeled, num_classes, rep, dsh
    )
  else:
    step_fn = make_train_step(graphdef, tx, config.protocol, schedule, mesh)
    state = loop.run(
      step_fn=step_fn,
      state=state,
      ds=ds,
      data_sharding=dsh,
      ckpt=ckpt,
      log=train_utils.MetricLog(workdir),
      start=start,
      total_steps=total_steps,
      log_every=config.log_every,
      loss_terms=('loss',),
      nonfinite_policy=config.nonfinite,
      desc=config.protocol,
    )
    predict_fn = make_predict_step(graphdef, config.protocol, mesh)
  predictions = predict_split(
    config, state, predict_fn, dsh, config.data.eval_split
  )
  result, gt, pred = evaluate_predictions(predictions, num_classes, config.eval)
  result.update(
    {
      'protocol': config.protocol,
      'init': config.init,
      'label_fraction': config.label_fraction,
      'num_labeled_sequences': int(len(labeled)),
      'seed': config.seed,
      'split': config.data.eval_split,
      'class_names': names,
      'steps': int(total_steps),
    }
  )
  if train_utils.is_chief():
    write_results(
      workdir, result, gt, pred, predictions, names, num_classes, config
    )
  return result


def knn_predictor(config, graphdef, state, labeled, num_classes, rep, dsh):
  """Builds the bank of labeled training frames; returns predict_fn(state, x)."""
  from skel_jax import knn  # pylint: disable=g-import-not-at-top

  kcfg = config.knn

  @jax.jit
  def features(state, x):
    params = join_params(state['trainable'], state['frozen'], 'knn')
    return knn.frame_features(
      nnx.merge(graphdef, params, state['batch_stats']), x
    )

  feats, labels = [], []
  for batch in input_pipeline.eval_batches(
    config.data,
    config.data.train_split,
    global_batch=config.eval.batch_size,
    indices=labeled,
  ):
    f = input_pipeline.gather_to_host(
      features(state, input_pipeline.global_eval_input(batch['x'], dsh))
    )
    keep = (batch['labels'] >= 0) & batch['valid'][:, None]
    feats.append(f[keep])
    labels.append(batch['labels'][keep])
  bank, bank_labels = knn.subsample_bank(
    np.concatenate(feats),
    np.concatenate(labels),
    kcfg.max_bank_frames,
    config.seed,
  )
  bank = jax.device_put(bank, rep)
  bank_labels = jax.device_put(bank_labels.astype(np.int32), rep)
  print(f'[knn] bank of {bank.shape[0]} labeled frames, k={kcfg.k}', flush=True)

  @jax.jit
  def predict(state, x):
    f = features(state, x)
    n, t, d = f.shape
    probs = knn.knn_probabilities(
      f.reshape(n * t, d),
      bank,
      bank_labels,
      num_classes + 1,
      kcfg.k,
      kcfg.temperature,
      kcfg.chunk,
    )
    return probs.reshape(n, t, -1)

  return predict


def write_results(
  workdir, result, gt, pred, predictions, names, num_classes, config
):
  from skel_jax import activitynet
  from skel_jax import plotting
  from skel_jax import tensorboard

  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(result, f, indent=2)
  class_names = names[:num_classes]
  activitynet.save_activitynet(
    os.path.join(workdir, 'gt.json'), gt, class_names, kind='gt'
  )
  activitynet.save_activitynet(
    os.path.join(workdir, 'predictions.json'), pred, class_names, kind='pred'
  )
  # Frame probabilities of the first sequences, for plots and later analysis.
  keep = predictions[: max(config.eval.num_plot_sequences, 8)]
  np.savez_compressed(
    os.path.join(workdir, 'frame_predictions.npz'),
    **{f'{p["id"]}/{k}': p[k] for p in keep for k in ('labels', 'probs')},
  )
  rows = [
    {
      'name': p['id'],
      'gt': p['labels'],
      'methods': [
        {
          'name': config.protocol,
          'pred': np.argmax(p['probs'], -1),
          'segments': pred[p['id']],
        }
      ],
    }
    for p in predictions[: config.eval.num_plot_sequences]
  ]
  if rows:
    plotting.plot_timelines(
      os.path.join(workdir, 'timelines.png'), rows, names, num_classes
    )
  if config.eval.animate and predictions:
    p = predictions[0]
    plotting.animate_skeleton(
      os.path.join(workdir, 'skeleton.gif'),
      p['skeleton'],
      labels=p['labels'],
      pred=np.argmax(p['probs'], -1),
      class_names=names,
      title=p['id'],
    )
  named = dict(
    result, per_class={names[int(c)]: v for c, v in result['per_class'].items()}
  )
  table = activitynet.format_table(named)
  print(table, flush=True)
  print(
    'frame confusion (% of true frames):\n'
    + plotting.confusion_text(result['confusion'], names),
    flush=True,
  )
  plotting.plot_confusion(
    os.path.join(workdir, 'confusion.png'), result['confusion'], names
  )
  # The same results in TensorBoard, at the step the evaluation ran.
  tensorboard.log_evaluation(
    workdir,
    result.get('steps', 0),
    result,
    names,
    images={
      'eval/timelines': os.path.join(workdir, 'timelines.png'),
      'eval/confusion': os.path.join(workdir, 'confusion.png'),
    },
    config=config,
    text='\n'.join('    ' + line for line in table.splitlines()),
  )
  print(
    f'[{config.protocol}] mAP '
    + ' '.join(f'@{k}={v:.1f}' for k, v in result['iou'].items())
    + f' mean={result["mean"]:.1f} frame_acc={result["frame_accuracy"]:.3f}',
    flush=True,
  )
