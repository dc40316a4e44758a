"""Contrastive losses and queues against straightforward NumPy references."""

import jax
import jax.numpy as jnp
import loss_oracles
import numpy as np

from skel_jax import losses


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_info_nce(pos, neg, t):
  logits = np.concatenate([pos[..., None], neg], -1) / t
  m = logits.max(-1, keepdims=True)
  lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
  return float(np.mean(lse - logits[..., 0]))


def test_global_moco_loss_matches_numpy():
  rng = np.random.default_rng(0)
  q, k, queue = (_unit(rng.normal(size=s)) for s in [(6, 4), (6, 4), (10, 4)])
  want = _np_info_nce((q * k).sum(-1), q @ queue.T, 0.07)
  got = loss_oracles.global_moco_loss(
    jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue), 0.07
  )
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_snippet_correspondence_finds_shifted_snippets():
  rng = np.random.default_rng(1)
  feats_k = rng.normal(size=(2, 5, 8)).astype(np.float32)
  perm = np.array([[4, 0, 1, 2, 3], [1, 0, 3, 2, 4]])
  # Query snippet i is a scaled, slightly noisy copy of key snippet perm[i].
  feats_q = 3.0 * np.take_along_axis(feats_k, perm[..., None], 1)
  feats_q += 0.01 * rng.normal(size=feats_q.shape)
  match = losses.snippet_correspondence(
    jnp.asarray(feats_q), jnp.asarray(feats_k)
  )
  np.testing.assert_array_equal(np.asarray(match), perm)


def test_snippet_loss_matches_numpy_loop():
  rng = np.random.default_rng(2)
  n, s, d, c, kq = 3, 4, 6, 5, 7
  q_snip = _unit(rng.normal(size=(n, s, d)))
  k_snip = _unit(rng.normal(size=(n, s, d)))
  fq, fk = rng.normal(size=(n, s, c)), rng.normal(size=(n, s, c))
  queue = _unit(rng.normal(size=(kq, d)))
  pos, neg = np.zeros((n, s)), np.zeros((n, s, kq))
  for b in range(n):
    for i in range(s):
      cos = [_unit(fq[b, i]) @ _unit(fk[b, j]) for j in range(s)]
      j = int(np.argmax(cos))
      pos[b, i] = q_snip[b, i] @ k_snip[b, j]
      neg[b, i] = queue @ q_snip[b, i]
  want = _np_info_nce(pos, neg, 0.2)
  got, _ = loss_oracles.snippet_loss(
    *(jnp.asarray(a) for a in (q_snip, k_snip, fq, fk, queue)), 0.2
  )
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_enqueue_writes_at_pointer_and_wraps():
  queue = jnp.zeros((8, 2))
  ptr = jnp.int32(0)
  for step in range(5):
    keys = jnp.full((4, 2), float(step + 1))
    queue, ptr = losses.enqueue(queue, ptr, keys)
    assert int(ptr) == (4 * (step + 1)) % 8
  # After 5 writes of 4 rows into 8 slots: slots 0-3 hold step 5, 4-7 step 4.
  np.testing.assert_array_equal(np.asarray(queue[:, 0]), [5] * 4 + [4] * 4)


def test_video_snippet_embedding_is_unit_mean_direction():
  rng = np.random.default_rng(3)
  k = _unit(rng.normal(size=(2, 5, 4)))
  got = np.asarray(losses.video_snippet_embedding(jnp.asarray(k)))
  np.testing.assert_allclose(got, _unit(k.mean(1)), rtol=1e-5, atol=1e-6)


def test_init_queue_rows_are_unit_norm():
  q = losses.init_queue(jax.random.PRNGKey(0), 16, 8)
  np.testing.assert_allclose(
    np.linalg.norm(np.asarray(q), axis=-1), 1.0, rtol=1e-5
  )
