"""Contrastive losses and queue updates (global MoCo InfoNCE + dense snippet InfoNCE).

Written on global arrays: under ``jit`` with the batch sharded over the
``data`` mesh axis, every reduction is global, so the result is the same on 1
or 8 devices. Queues are replicated; ``enqueue`` writes the all-gathered keys.
The named losses built from these pieces and their shard_map twins (explicit
collectives) are the tests' oracles: tests/loss_oracles.py.
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
