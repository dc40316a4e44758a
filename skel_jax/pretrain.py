"""Stage 1: MoCo pretraining with the dense skeleton-snippet contrastive loss.

Base methods (``pretrain.base``, one module each in ``skel_jax.bases``):
SkeletonCLR (MoCo v2), AimCLR (extreme view, EADM drop, distributional loss)
and RVTCLR (relative-tempo views, tempo ranking loss, distribution-consistency
view), each with or without the dense snippet loss, with nearest-neighbour
positive mining from a configurable epoch. This module owns what the bases
share (momentum encoder, bank, mining, snippet loss, queues, guard) and calls
the chosen base for its views and losses.

Sections: state, update step, training loop. The step is one jitted function
over globally sharded arrays (batch on the ``data`` axis; encoders, optimizer
state and queues replicated, or the large parameters and their optimizer
state sharded over an ``fsdp`` axis when ``config.fsdp > 1``), with the state
donated. ``pretrain.compute_dtype='bfloat16'`` runs the forward and backward
passes in bf16 on float32 master parameters (BN statistics, losses and
queues stay float32).

BatchNorm semantics: statistics are computed over the *global* batch (SyncBN),
which equals the single-GPU reference (SkeletonCLR/SnipCLR train on one GPU,
without MoCo's shuffle-BN) and makes losses independent of the device count.
"""

import functools
import os

import jax
import jax.numpy as jnp
from flax import nnx

from skel_jax import augment
from skel_jax import bases
from skel_jax import checkpoint
from skel_jax import config_validation
from skel_jax import diagnostics
from skel_jax import input_pipeline
from skel_jax import loop
from skel_jax import losses
from skel_jax import optim
from skel_jax import train_utils
from skel_jax.models import MoCoEncoder


# ---------------------------------------------------------------------------
# State.
# ---------------------------------------------------------------------------
def build_model(config):
  # Workdirs written before the base option existed are SkeletonCLR runs.
  base = bases.get(config.pretrain.get('base', 'skeletonclr'))
  return MoCoEncoder(config.model, **base.encoder, rngs=nnx.Rngs(config.seed))


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
    'queue': losses.init_queue(k_q1, pcfg.queue_size, config.model.feature_dim),
    'queue_ptr': jnp.zeros((), jnp.int32),
    'snippet_queue': losses.init_queue(
      k_q2, pcfg.snippet_queue_size, config.model.feature_dim
    ),
    'snippet_queue_ptr': jnp.zeros((), jnp.int32),
    'rng': k_aug,
    **train_utils.nonfinite_fields(),
  }
  return graphdef, state


# ---------------------------------------------------------------------------
# Update step.
# ---------------------------------------------------------------------------
LOSS_TERMS = bases.LOSS_TERMS


def make_views(batch, keys, config):
  """The augmented inputs of one step, keyed by role, and the source frame
  maps (N, T_view) of the query and key views.

  'q' (query) and 'k' (key) for every base; the base adds its own views
  (``Base.add_views``: AimCLR's 'extreme', RVTCLR's re-timed q/k, 'k_other'
  and 'dc').
  """
  cfg = config.augment
  x_q, x_k = augment.two_views(batch['x'], keys, cfg, cfg.query_strong)
  f_q, f_k = augment.two_view_frames(batch['x'].shape[2], keys, cfg)
  views, frames = {'q': x_q, 'k': x_k}, {'q': f_q, 'k': f_k}
  return bases.get(config.pretrain.base).add_views(
    batch, keys, config, views, frames
  )


def enqueued_keys(k_out, pcfg):
  """Key outputs that enter the queues and serve as the in-batch bank."""
  return k_out[bases.get(pcfg.base).enqueued_view]


def snippet_bank_entries(k_snip, pcfg):
  """What one video adds to the snippet bank: its per-video mean snippet
  embedding (the release, ``snippet_negatives='video_mean'``) or every one of
  its S snippets (``'snippets'``: same-position snippets of other videos then
  sit among the negatives, so a position code cannot separate them)."""
  if pcfg.snippet_negatives == 'snippets':
    return k_snip.reshape(-1, k_snip.shape[-1])
  return losses.video_snippet_embedding(k_snip)


def compute_losses(q_out, k_out, state, pcfg, mining, frames):
  """Total loss and metrics of the configured base (+ snippet loss).

  q_out / k_out: query- and key-encoder outputs per view (the base's
  ``query_views`` / ``key_views``). ``mining``: traced bool, True once
  nearest-neighbour mining is on. ``frames``: source frame maps of the views
  (``make_views``), which give the content-correct snippet correspondence.
  The base computes its losses (``Base.losses``) from the shared contrast
  (``bases.Contrast``); mined positives (top-k of the bank) join the global
  positives from the mining epoch on; snippet positives gain the top
  ``snippet_mining_topk`` entries of queue 2.
  """
  in_batch = pcfg.negatives == 'in_batch'
  bank_out = enqueued_keys(k_out, pcfg)
  bank = bank_out['global'] if in_batch else state['queue']

  def logits_of(query, key):
    return losses.global_logits(query, key, bank, in_batch)

  def mined(*negs, topk=pcfg.mining_topk):
    if pcfg.mining_epoch < 0:  # never mines: no top-k work at all
      return None
    extra = functools.reduce(
      jnp.logical_or, [losses.topk_mask(n, topk) for n in negs]
    )
    return extra & mining

  contrast = bases.Contrast(
    logits=lambda query, key: logits_of(query['global'], key['global']),
    logits_of=logits_of,
    mined=mined,
    temperature=pcfg.temperature,
    pcfg=pcfg,
  )
  total, metrics = bases.get(pcfg.base).losses(q_out, k_out, contrast)
  q, k = q_out['q'], k_out['k']
  metrics.update(_global_diagnostics(*contrast.logits(q, k), q, k))
  if pcfg.snippet_weight > 0:
    # Snippets of q against the enqueued key view (RVTCLR's release pairs the
    # query with the other-tempo key: the argmax matching absorbs the shift).
    l_snip, snip_metrics = _snippet_loss(
      q, bank_out, state, pcfg, frames, mined
    )
    total = total + pcfg.snippet_weight * l_snip
    metrics['loss_snippet'] = l_snip
    metrics.update(snip_metrics)
  metrics['loss'] = total
  return total, metrics


def _global_diagnostics(pos, neg, q, k):
  d = diagnostics.contrast(pos, neg)
  return {
    'diag/global_top1': d['top1'],
    'diag/global_pos_cos': d['pos_cos'],
    'diag/global_neg_cos': d['neg_cos'],
    'diag/align': diagnostics.alignment(q['global'], k['global']),
    'diag/uniform': diagnostics.uniformity(q['global']),
  }


def _snippet_loss(q, bank_out, state, pcfg, frames, mined):
  """Dense snippet InfoNCE of the configured variant, and its diagnostics.

  Positives (``snippet_positive``): 'argmax' of the raw pooled features (the
  release) or 'geometry', the key snippet showing the same frames (from the
  crops' frame maps; query snippets whose frames the key view does not show
  are left out). Negatives (``snippet_negatives``): see
  ``snippet_bank_entries``; in-batch mode uses the global batch's entries of
  the other videos, queue mode the snippet queue.
  """
  in_batch = pcfg.negatives == 'in_batch'
  k_snip, s = bank_out['snippets'], q['snippets'].shape[1]
  argmax = losses.snippet_correspondence(
    q['snippet_feats'], bank_out['snippet_feats']
  )
  geo, geo_valid = diagnostics.geometric_match(
    frames['q'], frames[bases.get(pcfg.base).enqueued_view], s
  )
  if pcfg.snippet_positive == 'geometry':
    match, valid = geo, geo_valid
  else:
    match, valid = argmax, None
  s_bank = (
    snippet_bank_entries(k_snip, pcfg) if in_batch else state['snippet_queue']
  )
  s_pos, s_neg = losses.snippet_logits(
    q['snippets'], k_snip, match, s_bank, in_batch
  )
  loss = losses.info_nce(
    s_pos,
    s_neg,
    pcfg.temperature,
    mined(s_neg, topk=pcfg.snippet_mining_topk),
    valid,
  )
  d = diagnostics.contrast(s_pos, s_neg, valid)
  index = jnp.arange(s)[None]
  metrics = {
    'diag/snippet_top1': d['top1'],
    'diag/snippet_pos_cos': d['pos_cos'],
    'diag/snippet_neg_cos': d['neg_cos'],
    # How often the released argmax picks the query's own index, and how
    # often it picks the snippet that shows the same frames.
    'diag/snippet_same_index': jnp.mean(argmax == index),
    'diag/snippet_content_correct': (
      jnp.sum((argmax == geo) & geo_valid) / jnp.maximum(jnp.sum(geo_valid), 1)
    ),
  }
  for name, v in diagnostics.variance_shares(q['snippets']).items():
    metrics[f'diag/snippet_{name}'] = v
  return loss, metrics


def cast_floats(tree, dtype):
  return jax.tree.map(
    lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
    tree,
  )


def encode(model, views, names, drop_key, modes=None):
  """Encoder outputs of ``views[name]`` for each name, in call order, in
  float32 (losses are computed in float32). ``modes``: encoder mode per view
  ('main' when absent)."""
  modes = modes or {}
  return {
    n: cast_floats(
      model(
        views[n],
        train=True,
        dropout_key=jax.random.fold_in(drop_key, i),
        mode=modes.get(n, 'main'),
      ),
      jnp.float32,
    )
    for i, n in enumerate(names)
  }


def momentum_update(key_params, params, m):
  """MoCo's key encoder: k <- m k + (1 - m) q."""
  return jax.tree.map(lambda k, q: m * k + (1.0 - m) * q, key_params, params)


def train_step(state, batch, *, graphdef, tx, config, schedule, mining_step=-1):
  """One MoCo step of the configured base. ``mining_step``: first step with
  nearest-neighbour mining (-1 = never); a traced comparison, so switching
  on needs no recompilation."""
  pcfg = config.pretrain
  dtype = jnp.dtype(pcfg.compute_dtype)
  keys = augment.sample_keys(state['rng'], state['step'], batch['index'])
  # Dropout keys (ST-GCN) per step; AGCN ignores them.
  drop_q, drop_k = jax.random.split(
    jax.random.fold_in(jax.random.fold_in(state['rng'], 1 << 30), state['step'])
  )
  views, frames = make_views(batch, keys, config)
  views = {name: v.astype(dtype) for name, v in views.items()}
  mining = (mining_step >= 0) & (state['step'] >= mining_step)

  # Momentum update of the key encoder before computing keys (MoCo order).
  base = bases.get(pcfg.base)
  key_params = momentum_update(
    state['key_params'], state['params'], pcfg.momentum
  )
  # copy=True: the key encoder's BN updates must not alias
  # state['key_batch_stats'], or a skipped (non-finite) step would keep them.
  key_model = nnx.merge(
    graphdef,
    cast_floats(key_params, dtype),
    state['key_batch_stats'],
    copy=True,
  )
  # Views in the base's call order (BN running statistics follow it).
  k_out = jax.lax.stop_gradient(
    encode(key_model, views, base.key_views, drop_k)
  )
  key_batch_stats = nnx.state(key_model, nnx.BatchStat)

  # BN statistics go through grad as an argument so that NNX mutates them at
  # the right trace level. Params are cast inside, so grads are float32.
  def loss_fn(params, batch_stats):
    model = nnx.merge(
      graphdef, cast_floats(params, dtype), batch_stats, copy=True
    )
    q_out = encode(model, views, base.query_views, drop_q, base.view_modes)
    total, metrics = compute_losses(q_out, k_out, state, pcfg, mining, frames)
    return total, (metrics, nnx.state(model, nnx.BatchStat))

  grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
    state['params'], state['batch_stats']
  )
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = jax.tree.map(lambda p, u: p + u, state['params'], updates)

  # Keys of the whole global batch enter the queues (replicated arrays).
  queue, queue_ptr = state['queue'], state['queue_ptr']
  snippet_queue, snippet_ptr = (
    state['snippet_queue'],
    state['snippet_queue_ptr'],
  )
  enq = enqueued_keys(k_out, pcfg)
  metrics['lr'] = schedule(state['step'])
  metrics['mining'] = mining.astype(jnp.float32)
  if pcfg.negatives == 'queue':
    queue, queue_ptr = losses.enqueue(queue, queue_ptr, enq['global'])
    metrics['diag/queue_fill'] = diagnostics.queue_fill(
      state['step'], enq['global'].shape[0], queue.shape[0]
    )
    if pcfg.snippet_weight > 0:
      entries = snippet_bank_entries(enq['snippets'], pcfg)
      snippet_queue, snippet_ptr = losses.enqueue(
        snippet_queue, snippet_ptr, entries
      )
      metrics['diag/snippet_queue_fill'] = diagnostics.queue_fill(
        state['step'], entries.shape[0], snippet_queue.shape[0]
      )
  new_state = dict(
    state,
    step=state['step'] + 1,
    params=params,
    batch_stats=batch_stats,
    key_params=key_params,
    key_batch_stats=key_batch_stats,
    opt_state=opt_state,
    queue=queue,
    queue_ptr=queue_ptr,
    snippet_queue=snippet_queue,
    snippet_queue_ptr=snippet_ptr,
  )
  # A non-finite loss leaves the state as it was (stop or skip: see loop).
  new_state = train_utils.guard_nonfinite(
    new_state, state, [metrics.get(k, 0.0) for k in LOSS_TERMS]
  )
  metrics['skipped_steps'] = new_state['skipped_steps']
  return new_state, metrics


def make_train_step(
  config,
  graphdef,
  tx,
  schedule,
  *,
  mining_step=-1,
  mesh=None,
  state_shardings=None,
  donate=True,
):
  """``train_step`` jitted as training runs it: over ``mesh`` with the state
  laid out by ``state_shardings`` (default replicated), the batch sharded on
  the data axis, metrics replicated, the state donated (``donate``). Without
  a mesh: plain ``jax.jit`` on the default device. Training, the benchmark,
  the tests and scripts/profile_step.py all build the step here."""
  fn = functools.partial(
    train_step,
    graphdef=graphdef,
    tx=tx,
    config=config,
    schedule=schedule,
    mining_step=mining_step,
  )
  donate_argnums = (0,) if donate else ()
  if mesh is None:
    return jax.jit(fn, donate_argnums=donate_argnums)
  rep, dsh = train_utils.replicated(mesh), train_utils.data_sharding(mesh)
  sh = rep if state_shardings is None else state_shardings
  return jax.jit(
    fn,
    in_shardings=(sh, dsh),
    out_shardings=(sh, rep),
    donate_argnums=donate_argnums,
  )


# ---------------------------------------------------------------------------
# Training loop.
# ---------------------------------------------------------------------------
def mining_start_step(pcfg, steps_per_epoch):
  """First mined step: the release mines when its 0-based epoch index
  exceeds ``mining_epoch``, i.e. after mining_epoch + 1 full epochs."""
  if pcfg.mining_epoch < 0:
    return -1
  return (pcfg.mining_epoch + 1) * steps_per_epoch


def train(config, workdir):
  """Runs (or resumes) pretraining; returns (graphdef, final state)."""
  config_validation.validate(config, workdir)
  train_utils.print_banner(f'pretrain [{config.pretrain.base}] -> {workdir}')
  train_utils.write_run_record(workdir, config)
  mesh = train_utils.mesh_for(config)
  dsh = train_utils.data_sharding(mesh)

  input_pipeline.ensure_built(config.data)
  ds, num_sequences = input_pipeline.pretrain_dataset(
    config.data,
    config.data.pretrain_split,
    global_batch=config.batch_size,
    seed=config.seed,
  )
  schedule, total_steps, steps_per_epoch = optim.epoch_schedule(
    config, num_sequences, drop_last=True
  )
  tx = optim.make_optimizer(config.optimizer, schedule)

  graphdef, state = init_state(config, tx)
  # Replicated, or parameters/optimizer state sharded over 'fsdp' (config.fsdp).
  state_sh = train_utils.state_shardings(state, mesh)
  state = jax.device_put(state, state_sh)
  ckpt, start, state = checkpoint.open_and_restore(
    workdir, config.checkpoint, state, state_sh, 'pretrain'
  )

  step_fn = make_train_step(
    config,
    graphdef,
    tx,
    schedule,
    mining_step=mining_start_step(config.pretrain, steps_per_epoch),
    mesh=mesh,
    state_shardings=state_sh,
  )
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
    loss_terms=LOSS_TERMS,
    nonfinite_policy=config.nonfinite,
    desc='pretrain',
    log_extra=lambda step: {'epoch': step * config.batch_size / num_sequences},
  )
  probe_scores = {}
  if config.probe.enabled:
    from skel_jax import probe  # pylint: disable=g-import-not-at-top

    result = probe.probe_pretrain_state(
      config, state, os.path.join(workdir, 'probe.json')
    )
    probe_scores = {
      f'probe/{k}': v for k, v in result.items() if isinstance(v, float)
    }
    print(
      '[pretrain] frozen-feature probe: '
      + ', '.join(
        f'{k}={v:.3f}' for k, v in result.items() if isinstance(v, float)
      ),
      flush=True,
    )
  if train_utils.is_chief():
    # Probe scores and the run's hyperparameters next to the training
    # scalars (the diagnostics 'diag/...' went there through MetricLog).
    from skel_jax import tensorboard  # pylint: disable=g-import-not-at-top

    with tensorboard.ScalarWriter(os.path.join(workdir, 'tb')) as tb:
      tb.scalars(total_steps, probe_scores)
      tb.hparams(tensorboard.flatten_config(config), sorted(probe_scores))
  return graphdef, state
