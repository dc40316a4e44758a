"""Stage 1: MoCo pretraining with the dense skeleton-snippet contrastive loss.

Sections: state, update step, training loop. The step is one jitted function
over globally sharded arrays (batch on the ``data`` axis; encoders, optimizer
state and queues replicated), with the state donated.

BatchNorm semantics: statistics are computed over the *global* batch (SyncBN),
which equals the single-GPU reference (SkeletonCLR/SnipCLR train on one GPU,
without MoCo's shuffle-BN) and makes losses independent of the device count.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from skel_jax import augment
from skel_jax import checkpoint
from skel_jax import config_validation
from skel_jax import input_pipeline
from skel_jax import loop
from skel_jax import losses
from skel_jax import train_utils
from skel_jax.models import MoCoEncoder


# ---------------------------------------------------------------------------
# State.
# ---------------------------------------------------------------------------
def build_model(config):
  return MoCoEncoder(config.model, rngs=nnx.Rngs(config.seed))


def init_state(config, tx):
  """Returns (graphdef, state dict). The key encoder starts as a copy."""
  model = build_model(config)
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  key = jax.random.PRNGKey(config.seed)
  k_aug, k_q1, k_q2 = jax.random.split(key, 3)
  pcfg = config.pretrain
  state = {
      'step': jnp.zeros((), jnp.int32),
      'params': params,
      'batch_stats': stats,
      'key_params': jax.tree.map(jnp.copy, params),
      'key_batch_stats': jax.tree.map(jnp.copy, stats),
      'opt_state': tx.init(params),
      'queue': losses.init_queue(k_q1, pcfg.queue_size,
                                 config.model.feature_dim),
      'queue_ptr': jnp.zeros((), jnp.int32),
      'snippet_queue': losses.init_queue(k_q2, pcfg.snippet_queue_size,
                                         config.model.feature_dim),
      'snippet_queue_ptr': jnp.zeros((), jnp.int32),
      'rng': k_aug,
      **train_utils.nonfinite_fields(),
  }
  return graphdef, state


# ---------------------------------------------------------------------------
# Update step.
# ---------------------------------------------------------------------------
LOSS_TERMS = ('loss_global', 'loss_snippet')


def compute_losses(q_out, k_out, state, pcfg):
  """Total loss = global InfoNCE + snippet_weight * snippet InfoNCE.

  ``pretrain.negatives``: 'queue' (faithful MoCo queues) or 'in_batch' (the
  other videos of the global batch, across all devices; no queue).
  """
  t = pcfg.temperature
  in_batch = pcfg.negatives == 'in_batch'
  if in_batch:
    l_global = losses.in_batch_global_loss(q_out['global'], k_out['global'], t)
  else:
    l_global = losses.global_moco_loss(q_out['global'], k_out['global'],
                                       state['queue'], t)
  metrics = {'loss_global': l_global}
  total = l_global
  if pcfg.snippet_weight > 0:
    args = (q_out['snippets'], k_out['snippets'], q_out['snippet_feats'],
            k_out['snippet_feats'])
    if in_batch:
      l_snip, match = losses.in_batch_snippet_loss(*args, t)
    else:
      l_snip, match = losses.snippet_loss(*args, state['snippet_queue'], t)
    total = total + pcfg.snippet_weight * l_snip
    s = match.shape[1]
    metrics['loss_snippet'] = l_snip
    # How often the matched key snippet is the same index (temporal shift).
    metrics['snippet_match_same_index'] = jnp.mean(
        (match == jnp.arange(s)[None]).astype(jnp.float32))
  metrics['loss'] = total
  return total, metrics


def train_step(state, batch, *, graphdef, tx, config, schedule):
  pcfg = config.pretrain
  keys = augment.sample_keys(state['rng'], state['step'], batch['index'])
  # Dropout keys (ST-GCN) per step; AGCN ignores them.
  drop_q, drop_k = jax.random.split(
      jax.random.fold_in(jax.random.fold_in(state['rng'], 1 << 30),
                         state['step']))
  x_q, x_k = augment.two_views(batch['x'], keys, config.augment)

  # Momentum update of the key encoder before computing keys (MoCo order).
  m = pcfg.momentum
  key_params = jax.tree.map(lambda k, q: m * k + (1.0 - m) * q,
                            state['key_params'], state['params'])
  key_model = nnx.merge(graphdef, key_params, state['key_batch_stats'])
  k_out = jax.lax.stop_gradient(key_model(x_k, train=True,
                                           dropout_key=drop_k))
  key_batch_stats = nnx.state(key_model, nnx.BatchStat)

  # BN statistics go through grad as an argument so that NNX mutates them at
  # the right trace level.
  def loss_fn(params, batch_stats):
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    q_out = model(x_q, train=True, dropout_key=drop_q)
    total, metrics = compute_losses(q_out, k_out, state, pcfg)
    return total, (metrics, nnx.state(model, nnx.BatchStat))

  grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
      state['params'], state['batch_stats'])
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = jax.tree.map(lambda p, u: p + u, state['params'], updates)

  # Keys of the whole global batch enter the queues (replicated arrays).
  queue, queue_ptr = state['queue'], state['queue_ptr']
  snippet_queue, snippet_ptr = state['snippet_queue'], state['snippet_queue_ptr']
  if pcfg.negatives == 'queue':
    queue, queue_ptr = losses.enqueue(queue, queue_ptr, k_out['global'])
  if pcfg.negatives == 'queue' and pcfg.snippet_weight > 0:
    snippet_queue, snippet_ptr = losses.enqueue(
        snippet_queue, snippet_ptr,
        losses.video_snippet_embedding(k_out['snippets']))
  metrics['lr'] = schedule(state['step'])
  new_state = dict(state, step=state['step'] + 1, params=params,
                   batch_stats=batch_stats, key_params=key_params,
                   key_batch_stats=key_batch_stats, opt_state=opt_state,
                   queue=queue, queue_ptr=queue_ptr,
                   snippet_queue=snippet_queue,
                   snippet_queue_ptr=snippet_ptr)
  # A non-finite loss leaves the state as it was (stop or skip: see loop).
  new_state = train_utils.guard_nonfinite(
      new_state, state, [metrics[k] for k in LOSS_TERMS if k in metrics])
  metrics['skipped_steps'] = new_state['skipped_steps']
  return new_state, metrics


# ---------------------------------------------------------------------------
# Training loop.
# ---------------------------------------------------------------------------
def schedule_and_steps(config, num_sequences):
  steps_per_epoch = max(1, num_sequences // config.batch_size)
  total = config.get('num_steps', 0) or config.num_epochs * steps_per_epoch
  warmup = int(config.warmup_epochs * steps_per_epoch)
  decays = [int(e * steps_per_epoch) for e in config.lr_decay_epochs]
  schedule = train_utils.warmup_step_schedule(config.optimizer.lr, warmup,
                                              decays)
  return schedule, total, steps_per_epoch


def train(config, workdir):
  """Runs (or resumes) pretraining; returns (graphdef, final state)."""
  config_validation.validate(config, workdir)
  train_utils.print_banner(f'pretrain -> {workdir}')
  train_utils.write_run_record(workdir, config)
  mesh = train_utils.mesh_for(config)
  rep, dsh = train_utils.replicated(mesh), train_utils.data_sharding(mesh)

  input_pipeline.ensure_built(config.data)
  ds, num_sequences = input_pipeline.pretrain_dataset(
      config.data, config.data.pretrain_split, global_batch=config.batch_size,
      seed=config.seed)
  schedule, total_steps, _ = schedule_and_steps(config, num_sequences)
  tx = train_utils.make_optimizer(config.optimizer, schedule)

  graphdef, state = init_state(config, tx)
  state = jax.device_put(state, rep)
  ckpt, start, state = checkpoint.open_and_restore(
      workdir, config.checkpoint, state, rep, 'pretrain')

  step_fn = jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx, config=config,
                        schedule=schedule),
      in_shardings=(rep, dsh), out_shardings=(rep, rep), donate_argnums=0)
  state = loop.run(
      step_fn=step_fn, state=state, ds=ds, data_sharding=dsh, ckpt=ckpt,
      log=train_utils.MetricLog(workdir), start=start, total_steps=total_steps,
      log_every=config.log_every, loss_terms=LOSS_TERMS,
      nonfinite_policy=config.nonfinite, desc='pretrain',
      log_extra=lambda step: {'epoch': step * config.batch_size / num_sequences})
  return graphdef, state
