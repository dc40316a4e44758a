"""KNN probe: per-frame features of a frozen backbone, cosine k-NN against the
labeled training frames, vote distributions as frame probabilities.

The vote of the k nearest training frames is weighted by exp(cos / tau)
(the InstDisc / SkeletonCLR KNN protocol, applied per frame). Similarities are
computed on device in chunks of the memory bank (``lax.scan`` with a running
top-k), so the bank never meets all queries at once.
"""

import jax
import jax.numpy as jnp
import numpy as np

from skel_jax.models.heads import l2_normalize
from skel_jax.models.heads import upsample_nearest


def frame_features(model, x):
  """(N, M, T, V, 3) -> (N, T, D): the backbone taps (inference-mode BN),
  joint/person-averaged, resized to frame resolution, concatenated, L2-normed."""
  taps = model.taps_of(x, train=False)
  t = x.shape[2]
  feats = jnp.concatenate([upsample_nearest(f, t) for f in taps], axis=-1)
  return l2_normalize(feats.astype(jnp.float32))


def topk_cosine(queries, bank, k, chunk):
  """(Q, D) x (B, D) -> top-k (similarities, bank indices), chunked over B."""
  b = bank.shape[0]
  pad = (-b) % chunk
  bank = jnp.pad(bank, ((0, pad), (0, 0)))
  valid = jnp.arange(b + pad) < b
  chunks = bank.reshape(-1, chunk, bank.shape[1])
  valid = valid.reshape(-1, chunk)
  q = queries.shape[0]
  init = (jnp.full((q, k), -jnp.inf), jnp.zeros((q, k), jnp.int32))

  def body(carry, inputs):
    best_s, best_i = carry
    i, c, ok = inputs
    s = jnp.where(ok[None], queries @ c.T, -jnp.inf)
    idx = i * chunk + jnp.arange(chunk, dtype=jnp.int32)
    all_s = jnp.concatenate([best_s, s], axis=1)
    all_i = jnp.concatenate([best_i, jnp.broadcast_to(idx, s.shape)], axis=1)
    top_s, pos = jax.lax.top_k(all_s, k)
    return (top_s, jnp.take_along_axis(all_i, pos, axis=1)), None

  (s, i), _ = jax.lax.scan(
    body, init, (jnp.arange(chunks.shape[0]), chunks, valid)
  )
  return s, i


def knn_probabilities(
  queries, bank, bank_labels, num_outputs, k, temperature, chunk
):
  """Weighted k-NN vote per query frame -> (Q, num_outputs), rows sum to 1."""
  sims, idx = topk_cosine(queries, bank, k, chunk)
  weights = jnp.exp(sims / temperature)
  votes = jax.nn.one_hot(bank_labels[idx], num_outputs) * weights[..., None]
  votes = jnp.sum(votes, axis=1)
  return votes / jnp.sum(votes, axis=-1, keepdims=True)


def subsample_bank(features, labels, max_frames, seed):
  """Seeded random subset of the labeled frames when the bank is too large."""
  n = features.shape[0]
  if n <= max_frames:
    return features, labels
  keep = np.sort(
    np.random.default_rng(seed).choice(n, max_frames, replace=False)
  )
  return features[keep], labels[keep]
