"""KNN probe: chunked top-k equals brute force; votes form distributions."""

import jax.numpy as jnp
import numpy as np

from skel_jax import knn


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_topk_cosine_matches_brute_force_across_chunks():
  rng = np.random.default_rng(0)
  q = _unit(rng.normal(size=(7, 5))).astype(np.float32)
  bank = _unit(rng.normal(size=(23, 5))).astype(np.float32)  # 23 % 4 != 0
  s, i = knn.topk_cosine(jnp.asarray(q), jnp.asarray(bank), k=3, chunk=4)
  sims = q @ bank.T
  want_i = np.argsort(-sims, axis=1)[:, :3]
  np.testing.assert_array_equal(np.asarray(i), want_i)
  np.testing.assert_allclose(
    np.asarray(s), np.take_along_axis(sims, want_i, 1), rtol=1e-5
  )


def test_knn_probabilities_weighted_vote():
  bank = np.eye(3, dtype=np.float32)[[0, 0, 1, 2]]
  labels = np.array([1, 1, 0, 2], np.int32)
  q = _unit(np.array([[1.0, 0.1, 0.0]], np.float32))
  p = np.asarray(
    knn.knn_probabilities(
      jnp.asarray(q),
      jnp.asarray(bank),
      jnp.asarray(labels),
      4,
      k=3,
      temperature=0.5,
      chunk=2,
    )
  )
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
  # Two nearest bank frames (label 1) dominate; class 3 gets no vote.
  assert p[0].argmax() == 1 and p[0, 3] == 0.0
  sims = q @ bank.T
  top = np.argsort(-sims[0])[:3]
  w = np.exp(sims[0, top] / 0.5)
  want = np.zeros(4)
  np.add.at(want, labels[top], w)
  np.testing.assert_allclose(p[0], want / want.sum(), rtol=1e-5)


def test_subsample_bank_is_seeded():
  f = np.arange(20, dtype=np.float32)[:, None]
  l = np.arange(20)
  a = knn.subsample_bank(f, l, 5, seed=1)
  b = knn.subsample_bank(f, l, 5, seed=1)
  np.testing.assert_array_equal(a[1], b[1])
  assert len(a[1]) == 5 and np.all(np.diff(a[1]) > 0)
