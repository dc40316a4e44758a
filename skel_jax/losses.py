"""Contrastive losses and queue updates (global MoCo InfoNCE + dense snippet InfoNCE).

Written on global arrays: under ``jit`` with the batch sharded over the
``data`` mesh axis, every reduction is global, so the result is the same on 1
or 8 devices. Queues are replicated; ``enqueue`` writes the all-gathered keys.
"""

import jax
import jax.numpy as jnp


def info_nce(pos, neg, temperature, extra_pos=None, valid=None):
  """InfoNCE with the positive at index 0: pos (...,), neg (..., K).

  ``extra_pos`` (bool, shaped like ``neg``) marks negatives promoted to
  positives by nearest-neighbour mining; the loss is then AimCLR's
  multi-positive form -sum_{p in P} log softmax_p / |P|.
  ``valid`` (bool, shaped like ``pos``): average over these queries only.
  """
  logits = jnp.concatenate([pos[..., None], neg], axis=-1) / temperature
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  if extra_pos is None:
    per_query = lse - logits[..., 0]
  else:
    mask = jnp.concatenate([jnp.ones(pos.shape + (1,), bool), extra_pos], -1)
    pos_mean = jnp.sum(jnp.where(mask, logits, 0.0), -1) / jnp.sum(
      mask, -1
    ).astype(jnp.float32)
    per_query = lse - pos_mean
  if valid is None:
    return jnp.mean(per_query)
  return jnp.sum(jnp.where(valid, per_query, 0.0)) / jnp.maximum(
    jnp.sum(valid), 1
  ).astype(jnp.float32)


def _mask_own_video(neg, per_video):
  """-inf where the bank entry belongs to the query's own video (in-batch)."""
  n = neg.shape[0]
  owner = jnp.arange(neg.shape[-1]) // per_video
  own = owner == jnp.arange(n).reshape((n,) + (1,) * (neg.ndim - 1))
  return jnp.where(own, -jnp.inf, neg)


def global_logits(q, k_pos, bank, in_batch=False):
  """Similarities of q (N, D) to its positive key and to a bank (K, D).

  Queue mode: the bank is the MoCo queue. In-batch mode: the bank is the
  batch's own keys (N, D) and the query's own video is excluded from it.
  """
  pos = jnp.sum(q * k_pos, axis=-1)
  neg = q @ bank.T
  if in_batch:
    neg = _mask_own_video(neg, bank.shape[0] // q.shape[0])
  return pos, neg


def snippet_correspondence(feats_q, feats_k):
  """For each query snippet i, j* = argmax_j cos(f_q[i], f_k[j]) (DenseCL style).

  Computed on the raw pooled backbone features of the two views, so no
  alignment of index i with i after augmentation is assumed.
  """
  fq = feats_q * jax.lax.rsqrt(
    jnp.maximum(jnp.sum(feats_q**2, -1, keepdims=True), 1e-24)
  )
  fk = feats_k * jax.lax.rsqrt(
    jnp.maximum(jnp.sum(feats_k**2, -1, keepdims=True), 1e-24)
  )
  sim = jnp.einsum('nsc,ntc->nst', fq, fk)
  return jnp.argmax(sim, axis=-1)


def snippet_logits(q_snip, k_snip, match, bank, in_batch=False):
  """Dense snippet similarities: pos (N, S), neg (N, S, K).

  Positive: key snippet ``match`` (N, S) of each query snippet (the argmax
  of ``snippet_correspondence``, or the content-correct index).
  Negatives: a snippet bank: the snippet queue (queue mode) or the global
  batch's entries, N per-video means or N * S snippets, with the query's own
  video excluded (in-batch mode).
  """
  k_pos = jnp.take_along_axis(k_snip, match[..., None], axis=1)
  pos = jnp.sum(q_snip * k_pos, axis=-1)
  neg = jnp.einsum('nsd,kd->nsk', q_snip, bank)
  if in_batch:
    neg = _mask_own_video(neg, bank.shape[0] // q_snip.shape[0])
  return pos, neg


def topk_mask(neg, k):
  """Bool mask of the k most similar (finite) bank entries per query.

  A threshold at the k-th value instead of a one-hot scatter keeps memory at
  the size of ``neg`` (ties at the threshold would add entries; with float
  similarities they do not occur in practice).
  """
  kth = jax.lax.top_k(neg, k)[0][..., -1:]
  return (neg >= kth) & jnp.isfinite(neg)


def soft_target_loss(pos, neg, target_pos, target_neg, temperature):
  """AimCLR's distributional loss: cross-entropy of this view's distribution
  over [positive, bank] against the (stopped) distribution of the normal
  query view. log_softmax replaces the release's log(softmax) (same value,
  no underflow to -inf)."""

  def logits(p, n):
    return (jnp.concatenate([p[..., None], n], -1) / temperature).astype(
      jnp.float32
    )

  target = jax.nn.softmax(
    jax.lax.stop_gradient(logits(target_pos, target_neg)), -1
  )
  logp = jax.nn.log_softmax(logits(pos, neg), -1)
  return jnp.mean(-jnp.sum(jnp.where(target > 0, target * logp, 0.0), -1))


def margin_ranking_loss(higher, lower, margin, temperature):
  """torch ``MarginRankingLoss(margin)`` with target 1 on logits / T (RVTCLR)."""
  diff = (higher - lower).astype(jnp.float32) / temperature
  return jnp.mean(jax.nn.relu(margin - diff))


def global_moco_loss(q, k, queue, temperature):
  """SkeletonCLR / MoCo v2: q, k (N, D) unit vectors; queue (K, D) negatives."""
  return info_nce(*global_logits(q, k, queue), temperature)


def snippet_loss(q_snip, k_snip, feats_q, feats_k, snippet_queue, temperature):
  """Dense snippet InfoNCE over all N x S query snippets (queue negatives)."""
  match = snippet_correspondence(feats_q, feats_k)
  pos, neg = snippet_logits(q_snip, k_snip, match, snippet_queue)
  return info_nce(pos, neg, temperature), match


def video_snippet_embedding(k_snip):
  """Per-video mean of the key snippet embeddings, re-normalised (queue entry)."""
  m = jnp.mean(k_snip, axis=1)
  return m * jax.lax.rsqrt(
    jnp.maximum(jnp.sum(m * m, -1, keepdims=True), 1e-24)
  )


def enqueue(queue, ptr, keys):
  """Writes keys (B, D) at ``ptr`` and advances it by B (mod K).

  The released code never advances the snippet queue's pointer (a bug); both
  queues advance here. Validation guarantees K % B == 0, so no wrap-around.
  """
  queue = jax.lax.dynamic_update_slice(
    queue, keys.astype(queue.dtype), (ptr, 0)
  )
  return queue, (ptr + keys.shape[0]) % queue.shape[0]


def init_queue(key, size, dim):
  q = jax.random.normal(key, (size, dim), jnp.float32)
  return q / jnp.linalg.norm(q, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------
# In-batch negatives (no queue): the natural form for large pod batches.
# ---------------------------------------------------------------------------
def in_batch_global_loss(q, k, temperature):
  """Positive: the key of the same video; negatives: every other video's key
  in the global batch (gathered across devices by the partitioner)."""
  return info_nce(*global_logits(q, k, k, in_batch=True), temperature)


def in_batch_snippet_loss(q_snip, k_snip, feats_q, feats_k, temperature):
  """Snippet InfoNCE whose negatives are all snippets of the *other* videos of
  the global batch (N x S keys; the same video's snippets are excluded)."""
  bank = k_snip.reshape(-1, k_snip.shape[-1])
  match = snippet_correspondence(feats_q, feats_k)
  pos, neg = snippet_logits(q_snip, k_snip, match, bank, in_batch=True)
  return info_nce(pos, neg, temperature), match


# ---------------------------------------------------------------------------
# shard_map twins: the same losses from a per-device view with explicit
# collectives. They are the test oracle for the global-array versions (and
# document exactly which arrays cross devices).
# ---------------------------------------------------------------------------
def sharded_losses(
  mesh,
  negatives,
  temperature,
  axis='data',
  mining_topk=0,
  snippet_mining_topk=0,
):
  """Returns f(q, k, q_snip, k_snip, feats_q, feats_k, queue, snippet_queue)
  -> (global loss, snippet loss), computed per device with shard_map.

  ``mining_topk`` / ``snippet_mining_topk`` > 0 add that many mined positives
  (nearest bank entries) per query / query snippet, as after the mining epoch.
  """
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  def mined(neg, k):
    return topk_mask(neg, k) if k else None

  def per_device(q, k, q_snip, k_snip, feats_q, feats_k, queue, squeue):
    match = snippet_correspondence(feats_q, feats_k)
    k_pos = jnp.take_along_axis(k_snip, match[..., None], axis=1)
    s_pos = jnp.sum(q_snip * k_pos, axis=-1)
    pos = jnp.sum(q * k, axis=-1)
    if negatives == 'queue':
      # Queues are replicated: each device scores its own queries against
      # them; only the scalar losses are averaged across devices.
      neg = q @ queue.T
      s_neg = jnp.einsum('nsd,kd->nsk', q_snip, squeue)
    else:
      # In-batch: gather every device's keys; this device's videos sit at
      # rows [i * n, (i + 1) * n) of the gathered batch, and are masked.
      n, s, _ = k_snip.shape
      own = jax.lax.axis_index(axis) * n + jnp.arange(n)
      k_all = jax.lax.all_gather(k, axis, tiled=True)
      ks_all = jax.lax.all_gather(k_snip, axis, tiled=True)
      neg = jnp.where(
        jnp.arange(k_all.shape[0])[None] == own[:, None], -jnp.inf, q @ k_all.T
      )
      sims = jnp.einsum(
        'nsd,md->nsm', q_snip, ks_all.reshape(-1, ks_all.shape[-1])
      )
      owner = jnp.arange(sims.shape[-1]) // s
      s_neg = jnp.where(
        owner[None, None, :] == own[:, None, None], -jnp.inf, sims
      )
    lg = info_nce(pos, neg, temperature, mined(neg, mining_topk))
    ls = info_nce(s_pos, s_neg, temperature, mined(s_neg, snippet_mining_topk))
    # Equal per-device batches: the mean of the means is the global mean.
    return jax.lax.pmean(lg, axis), jax.lax.pmean(ls, axis)

  data, rep = P(axis), P()
  return jax.jit(
    jax.shard_map(
      per_device,
      mesh=mesh,
      in_specs=(data, data, data, data, data, data, rep, rep),
      out_specs=(rep, rep),
    )
  )
