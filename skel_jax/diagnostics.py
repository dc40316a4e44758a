"""Representation diagnostics computed inside the jitted pretraining step.

A contrastive loss can fall for the wrong reason: the released snippet loss
reaches ~0 within ~20 steps by matching snippets on a content-free *position*
code (docs/method.md, "The position shortcut"). These cheap scalars, logged
with every step's metrics, say what the embeddings encode:

- ``top1``: how often the positive beats every negative (a contrastive
  accuracy; 1.0 within a few steps is suspicious).
- ``pos_cos`` / ``neg_cos``: mean cosine to the positive and to the negatives.
- snippet ``same_index`` / ``content_correct``: how often the matched key
  snippet has the query's index, and how often it shows the same frames
  (known from the crops' frame maps).
- ``var_index`` / ``var_video``: share of the query snippet embeddings'
  variance explained by the snippet index and by the video (the position
  shortcut drives var_index to 1 and var_video to 0).
- ``align`` / ``uniform``: Wang & Isola (2020), alignment of positive pairs
  (alpha = 2) and uniformity (t = 2) of the global embeddings.

All functions take global arrays (the batch may be sharded; reductions are
global) and return float32 scalars.
"""

import jax
import jax.numpy as jnp

from skel_jax.models.heads import adaptive_avg_pool


def _masked_mean(x, mask):
  mask = mask.astype(jnp.float32)
  return jnp.sum(jnp.where(mask > 0, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1.0)


def contrast(pos, neg, valid=None):
  """top-1 accuracy and mean positive / negative cosine of one InfoNCE term.

  pos (...,), neg (..., K) similarities; -inf marks excluded bank entries.
  """
  valid = jnp.ones(pos.shape, bool) if valid is None else valid
  finite = jnp.isfinite(neg)
  top1 = pos > jnp.max(neg, axis=-1)
  neg_mean = jnp.sum(jnp.where(finite, neg, 0.0), -1) / jnp.maximum(
    jnp.sum(finite, -1), 1
  )
  return {
    'top1': _masked_mean(top1, valid),
    'pos_cos': _masked_mean(pos, valid),
    'neg_cos': _masked_mean(neg_mean, valid),
  }


def snippet_centers(frames, num_snippets):
  """Mean source frame of each snippet: frames (N, T) -> (N, S).

  Uses the snippet head's own pooling bins, so centre i describes exactly the
  frames snippet i averages.
  """
  f = frames.astype(jnp.float32)[..., None]
  return adaptive_avg_pool(f, num_snippets)[..., 0]


def geometric_match(frames_q, frames_k, num_snippets):
  """Content-correct key snippet of each query snippet, and its validity.

  The key snippet whose centre is nearest the query snippet's centre (in
  source frames); valid when that centre lies inside the frames the key view
  shows (otherwise the key view has no snippet with the same content).
  Returns (index (N, S) int32, valid (N, S) bool).
  """
  c_q = snippet_centers(frames_q, num_snippets)
  c_k = snippet_centers(frames_k, num_snippets)
  index = jnp.argmin(jnp.abs(c_q[:, :, None] - c_k[:, None, :]), axis=-1)
  lo = jnp.min(frames_k, axis=-1, keepdims=True).astype(jnp.float32)
  hi = jnp.max(frames_k, axis=-1, keepdims=True).astype(jnp.float32)
  valid = (c_q >= lo) & (c_q <= hi)
  return index.astype(jnp.int32), valid


def variance_shares(emb):
  """Share of the variance of emb (N, S, D) explained by snippet index and
  by video: between-group sum of squares over the total (a one-way ANOVA
  R^2 per grouping)."""
  emb = emb.astype(jnp.float32)
  centred = emb - jnp.mean(emb, axis=(0, 1))
  total = jnp.maximum(jnp.sum(centred**2), 1e-12)
  n, s = emb.shape[:2]
  by_index = n * jnp.sum(jnp.mean(centred, axis=0) ** 2) / total
  by_video = s * jnp.sum(jnp.mean(centred, axis=1) ** 2) / total
  return {'var_index': by_index, 'var_video': by_video}


def alignment(q, k):
  """Mean squared distance of positive pairs of unit vectors (alpha = 2)."""
  return jnp.mean(jnp.sum((q - k) ** 2, axis=-1))


def uniformity(z, t=2.0):
  """log E_{i != j} exp(-t ||z_i - z_j||^2) over the batch's unit vectors."""
  z = z.astype(jnp.float32)
  sq = jnp.maximum(2.0 - 2.0 * (z @ z.T), 0.0)
  n = z.shape[0]
  off = ~jnp.eye(n, dtype=bool)
  logits = jnp.where(off, -t * sq, -jnp.inf)
  return jax.nn.logsumexp(logits) - jnp.log(n * (n - 1.0))


def queue_fill(step, entries_per_step, size):
  """Fraction of a queue holding real keys after ``step + 1`` enqueues
  (the rest is its random initialisation)."""
  written = (step.astype(jnp.float32) + 1.0) * entries_per_step
  return jnp.minimum(written / size, 1.0)
