"""Test oracles for ``skel_jax.losses``: the named losses (queue and in-batch
negatives) composed from the library's logits and InfoNCE, and their
shard_map twins with explicit collectives. ``skel_jax.pretrain`` composes the
same pieces itself; only the tests call these."""

import jax
import jax.numpy as jnp

from skel_jax import losses


def global_moco_loss(q, k, queue, temperature):
  """SkeletonCLR / MoCo v2: q, k (N, D) unit vectors; queue (K, D) negatives."""
  return losses.info_nce(*losses.global_logits(q, k, queue), temperature)


def snippet_loss(q_snip, k_snip, feats_q, feats_k, snippet_queue, temperature):
  """Dense snippet InfoNCE over all N x S query snippets (queue negatives)."""
  match = losses.snippet_correspondence(feats_q, feats_k)
  pos, neg = losses.snippet_logits(q_snip, k_snip, match, snippet_queue)
  return losses.info_nce(pos, neg, temperature), match


# ---------------------------------------------------------------------------
# In-batch negatives (no queue): the natural form for large pod batches.
# ---------------------------------------------------------------------------
def in_batch_global_loss(q, k, temperature):
  """Positive: the key of the same video; negatives: every other video's key
  in the global batch (gathered across devices by the partitioner)."""
  return losses.info_nce(
    *losses.global_logits(q, k, k, in_batch=True), temperature
  )


def in_batch_snippet_loss(q_snip, k_snip, feats_q, feats_k, temperature):
  """Snippet InfoNCE whose negatives are all snippets of the *other* videos of
  the global batch (N x S keys; the same video's snippets are excluded)."""
  bank = k_snip.reshape(-1, k_snip.shape[-1])
  match = losses.snippet_correspondence(feats_q, feats_k)
  pos, neg = losses.snippet_logits(q_snip, k_snip, match, bank, in_batch=True)
  return losses.info_nce(pos, neg, temperature), match


# ---------------------------------------------------------------------------
# shard_map twins: the same losses from a per-device view with explicit
# collectives; the oracle for the global-array versions (and a record of
# exactly which arrays cross devices).
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
    return losses.topk_mask(neg, k) if k else None

  def per_device(q, k, q_snip, k_snip, feats_q, feats_k, queue, squeue):
    match = losses.snippet_correspondence(feats_q, feats_k)
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
    lg = losses.info_nce(pos, neg, temperature, mined(neg, mining_topk))
    ls = losses.info_nce(
      s_pos, s_neg, temperature, mined(s_neg, snippet_mining_topk)
    )
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
