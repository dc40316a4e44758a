"""Stage 1: MoCo pretraining with the dense skeleton-snippet contrastive loss.

Base methods (``pretrain.base``): SkeletonCLR (MoCo v2), AimCLR (extreme
view, EADM drop, distributional loss) and RVTCLR (relative-tempo views, tempo
ranking loss, distribution-consistency view), each with or without the dense
snippet loss, with nearest-neighbour positive mining from a configurable epoch.

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
from skel_jax import checkpoint
from skel_jax import config_defaults
from skel_jax import config_validation
from skel_jax import diagnostics
from skel_jax import input_pipeline
from skel_jax import loop
from skel_jax import losses
from skel_jax import train_utils
from skel_jax.models import MoCoEncoder


# ---------------------------------------------------------------------------
# State.
# ---------------------------------------------------------------------------
def build_model(config):
  # Workdirs written before the base option existed are SkeletonCLR runs.
  return MoCoEncoder(
    config.model,
    base=config.pretrain.get('base', 'skeletonclr'),
    rngs=nnx.Rngs(config.seed),
  )


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
BASES = tuple(config_defaults.BASES)
# Every loss term any base can report (fixed order: the non-finite record
# stores an index into it).
LOSS_TERMS = (
  'loss_global',
  'loss_snippet',
  'loss_ddm',
  'loss_cross_tempo',
  'loss_tempo_rank',
)


def make_views(batch, keys, config):
  """The augmented inputs of one step, keyed by role, and the source frame
  maps (N, T_view) of the query and key views ('q', 'k', and 'k_other').

  q: query; k: key; skeletonclr adds nothing; aimclr adds 'extreme';
  rvtclr re-times q and k (relative tempo), adds 'k_other' (the key at the
  other tempo) and 'dc' (a normal view at full length).
  """
  cfg, base = config.augment, config.pretrain.base
  x_q, x_k = augment.two_views(batch['x'], keys, cfg, cfg.query_strong)
  f_q, f_k = augment.two_view_frames(batch['x'].shape[2], keys, cfg)
  views, frames = {'q': x_q, 'k': x_k}, {'q': f_q, 'k': f_k}
  if base == 'aimclr':
    views['extreme'] = augment.third_view(batch['x'], keys, cfg, 'extreme')
  elif base == 'rvtclr':
    ratio = config.pretrain.tempo_ratio
    views['dc'] = augment.third_view(batch['x'], keys, cfg, 'normal')
    views['q'], views['k'], views['k_other'] = augment.relative_tempo(
      x_q, x_k, keys, ratio
    )
    frames['q'], frames['k'], frames['k_other'] = augment.relative_tempo_frames(
      f_q, f_k, keys, ratio
    )
  return views, frames


def enqueued_view(pcfg):
  """The key view whose embeddings enter the queues (RVTCLR's release
  enqueues the other-tempo key view) and serve as the in-batch bank."""
  return 'k_other' if pcfg.base == 'rvtclr' else 'k'


def enqueued_keys(k_out, pcfg):
  return k_out[enqueued_view(pcfg)]


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

  q_out: query-encoder outputs per view ('q', and 'extreme' or 'dc');
  k_out: key-encoder outputs per view ('k', and 'k_other' for RVTCLR).
  ``mining``: traced bool, True once nearest-neighbour mining is on.
  ``frames``: source frame maps of the views (``make_views``), which give
  the content-correct snippet correspondence.

  skeletonclr: InfoNCE(q, k).
  aimclr: InfoNCE(q, k) + (DDM(extreme) + DDM(extreme after EADM)) / 2,
          where DDM is the cross-entropy to the stopped distribution of q.
  rvtclr: InfoNCE(q, k) + InfoNCE(q, k_other) + tempo margin ranking
          (q.k > q.k_other on the tempo head) + DDM(dc view).
  Mined positives (top-k of the bank, unioned over the query views of the
  release) join the global positives from the mining epoch on; snippet
  positives gain the top ``snippet_mining_topk`` entries of queue 2.
  """
  t, base = pcfg.temperature, pcfg.base
  in_batch = pcfg.negatives == 'in_batch'
  bank_out = enqueued_keys(k_out, pcfg)
  bank = bank_out['global'] if in_batch else state['queue']
  q, k = q_out['q'], k_out['k']

  def logits(query, key):
    return losses.global_logits(query['global'], key['global'], bank, in_batch)

  def mined(*negs, topk=pcfg.mining_topk):
    if pcfg.mining_epoch < 0:  # never mines: no top-k work at all
      return None
    extra = functools.reduce(
      jnp.logical_or, [losses.topk_mask(n, topk) for n in negs]
    )
    return extra & mining

  pos, neg = logits(q, k)
  metrics = {}
  if base == 'skeletonclr':
    total = metrics['loss_global'] = losses.info_nce(pos, neg, t, mined(neg))
  elif base == 'aimclr':
    e = q_out['extreme']
    pos_e, neg_e = logits(e, k)
    pos_d, neg_d = losses.global_logits(
      e['global_drop'], k['global'], bank, in_batch
    )
    metrics['loss_global'] = losses.info_nce(
      pos, neg, t, mined(neg, neg_e, neg_d)
    )
    metrics['loss_ddm'] = 0.5 * (
      losses.soft_target_loss(pos_e, neg_e, pos, neg, t)
      + losses.soft_target_loss(pos_d, neg_d, pos, neg, t)
    )
    total = metrics['loss_global'] + metrics['loss_ddm']
  else:  # rvtclr
    other = k_out['k_other']
    pos_dc, neg_dc = logits(q_out['dc'], k)
    extra = mined(neg, neg_dc)
    metrics['loss_global'] = losses.info_nce(pos, neg, t, extra)
    pos_x = jnp.sum(q['global'] * other['global'], -1)
    metrics['loss_cross_tempo'] = losses.info_nce(pos_x, neg, t, extra)
    metrics['loss_tempo_rank'] = losses.margin_ranking_loss(
      jnp.sum(q['tempo'] * k['tempo'], -1),
      jnp.sum(q['tempo'] * other['tempo'], -1),
      pcfg.tempo_margin,
      t,
    )
    # The release leaves the DC positive logit undivided by T before the
    # mining epoch (a commented-out line) and divides it after; always here.
    metrics['loss_ddm'] = losses.soft_target_loss(pos_dc, neg_dc, pos, neg, t)
    total = sum(
      metrics[name]
      for name in (
        'loss_global',
        'loss_cross_tempo',
        'loss_tempo_rank',
        'loss_ddm',
      )
    )
  metrics.update(_global_diagnostics(pos, neg, q, k))
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
    frames['q'], frames[enqueued_view(pcfg)], s
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


def _cast(tree, dtype):
  return jax.tree.map(
    lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
    tree,
  )


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

  def run(model, names, drop_key, **modes):
    # Outputs leave the model in float32 (losses are computed in float32).
    return {
      n: _cast(
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

  # Momentum update of the key encoder before computing keys (MoCo order).
  m = pcfg.momentum
  key_params = jax.tree.map(
    lambda k, q: m * k + (1.0 - m) * q, state['key_params'], state['params']
  )
  # copy=True: the key encoder's BN updates must not alias
  # state['key_batch_stats'], or a skipped (non-finite) step would keep them.
  key_model = nnx.merge(
    graphdef, _cast(key_params, dtype), state['key_batch_stats'], copy=True
  )
  # RVTCLR's release encodes the other-tempo key first (BN running stats are
  # updated in call order).
  k_names = ('k_other', 'k') if pcfg.base == 'rvtclr' else ('k',)
  k_out = jax.lax.stop_gradient(run(key_model, k_names, drop_k))
  key_batch_stats = nnx.state(key_model, nnx.BatchStat)
  q_names = ('q',) + {'aimclr': ('extreme',), 'rvtclr': ('dc',)}.get(
    pcfg.base, ()
  )

  # BN statistics go through grad as an argument so that NNX mutates them at
  # the right trace level. Params are cast inside, so grads are float32.
  def loss_fn(params, batch_stats):
    model = nnx.merge(graphdef, _cast(params, dtype), batch_stats, copy=True)
    q_out = run(model, q_names, drop_q, extreme='eadm', dc='dc')
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


# ---------------------------------------------------------------------------
# Training loop.
# ---------------------------------------------------------------------------
def schedule_and_steps(config, num_sequences):
  steps_per_epoch = max(1, num_sequences // config.batch_size)
  total = config.get('num_steps', 0) or config.num_epochs * steps_per_epoch
  warmup = int(config.warmup_epochs * steps_per_epoch)
  decays = [int(e * steps_per_epoch) for e in config.lr_decay_epochs]
  schedule = train_utils.warmup_step_schedule(
    config.optimizer.lr, warmup, decays
  )
  return schedule, total, steps_per_epoch


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
  rep, dsh = train_utils.replicated(mesh), train_utils.data_sharding(mesh)

  input_pipeline.ensure_built(config.data)
  ds, num_sequences = input_pipeline.pretrain_dataset(
    config.data,
    config.data.pretrain_split,
    global_batch=config.batch_size,
    seed=config.seed,
  )
  schedule, total_steps, steps_per_epoch = schedule_and_steps(
    config, num_sequences
  )
  tx = train_utils.make_optimizer(config.optimizer, schedule)

  graphdef, state = init_state(config, tx)
  # Replicated, or parameters/optimizer state sharded over 'fsdp' (config.fsdp).
  state_sh = train_utils.state_shardings(state, mesh)
  state = jax.device_put(state, state_sh)
  ckpt, start, state = checkpoint.open_and_restore(
    workdir, config.checkpoint, state, state_sh, 'pretrain'
  )

  step_fn = jax.jit(
    functools.partial(
      train_step,
      graphdef=graphdef,
      tx=tx,
      config=config,
      schedule=schedule,
      mining_step=mining_start_step(config.pretrain, steps_per_epoch),
    ),
    in_shardings=(state_sh, dsh),
    out_shardings=(state_sh, rep),
    donate_argnums=0,
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
