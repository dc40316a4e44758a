"""Representation diagnostics and crop frame maps against NumPy references
and hand-worked values."""

import jax
import jax.numpy as jnp
import numpy as np

from skel_jax import augment
from skel_jax import config_defaults
from skel_jax import diagnostics


def test_variance_shares_match_numpy_anova():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(6, 4, 5)).astype(np.float32)
  got = diagnostics.variance_shares(jnp.asarray(emb))
  flat = emb.reshape(-1, 5)
  total = ((flat - flat.mean(0)) ** 2).sum()
  by_index = sum(
    6 * ((emb[:, i].mean(0) - flat.mean(0)) ** 2).sum() for i in range(4)
  )
  by_video = sum(
    4 * ((emb[n].mean(0) - flat.mean(0)) ** 2).sum() for n in range(6)
  )
  np.testing.assert_allclose(got['var_index'], by_index / total, rtol=1e-5)
  np.testing.assert_allclose(got['var_video'], by_video / total, rtol=1e-5)


def test_variance_shares_of_a_pure_position_code():
  # Every video maps snippet i to the same vector: the position shortcut.
  code = np.random.default_rng(1).normal(size=(1, 4, 3))
  emb = np.repeat(code, 5, axis=0)
  got = diagnostics.variance_shares(jnp.asarray(emb, jnp.float32))
  np.testing.assert_allclose(got['var_index'], 1.0, rtol=1e-5)
  np.testing.assert_allclose(got['var_video'], 0.0, atol=1e-6)


def test_geometric_match_hand_worked():
  # Query crop starts 4 frames after the key crop; 16 frames, 4 snippets.
  frames_k = np.arange(16)[None]
  frames_q = np.arange(4, 20)[None]
  # Centres: key 1.5, 5.5, 9.5, 13.5; query 5.5, 9.5, 13.5, 17.5.
  index, valid = diagnostics.geometric_match(
    jnp.asarray(frames_q), jnp.asarray(frames_k), 4
  )
  np.testing.assert_array_equal(index, [[1, 2, 3, 3]])
  # The key view ends at frame 15: the last query snippet has no twin.
  np.testing.assert_array_equal(valid, [[True, True, True, False]])


def test_geometric_match_reversed_tempo():
  # Key at double tempo (every 2nd frame of 0..31), query the first 16.
  frames_q = np.arange(16)[None]
  frames_k = (2 * np.arange(16))[None]
  index, valid = diagnostics.geometric_match(
    jnp.asarray(frames_q), jnp.asarray(frames_k), 4
  )
  # Query centres 1.5, 5.5, 9.5, 13.5; key centres 3, 11, 19, 27.
  np.testing.assert_array_equal(index, [[0, 0, 1, 1]])
  assert bool(np.all(valid))


def test_crop_frames_describe_the_crop():
  """temporal_crop of a clip whose values are frame numbers gives back the
  frame map (same key, same crop), for every offset."""
  t, ratio = 24, 6
  x = jnp.broadcast_to(
    jnp.arange(t, dtype=jnp.float32)[None, :, None, None], (1, t, 2, 3)
  )
  keys = jax.random.split(jax.random.key(0), 32)
  crops = jax.vmap(lambda k: augment.temporal_crop(x, k, ratio))(keys)
  frames = jax.vmap(lambda k: augment.crop_frames(t, k, ratio))(keys)
  np.testing.assert_array_equal(crops[:, 0, :, 0, 0], frames)
  # Symmetric padding repeats the edge frame: frame maps stay in [0, T).
  assert int(frames.min()) == 0 and int(frames.max()) == t - 1


def test_two_view_frames_match_two_views():
  cfg = config_defaults.pretrain_config().augment
  cfg.shear_amplitude = 0.0  # keep values = frame numbers
  cfg.query_strong = False
  t = 30
  x = jnp.broadcast_to(
    jnp.arange(t, dtype=jnp.float32)[None, None, :, None, None],
    (5, 1, t, 25, 3),
  )
  keys = jax.random.split(jax.random.key(3), 5)
  q, k = augment.two_views(x, keys, cfg, query_strong=False)
  f_q, f_k = augment.two_view_frames(t, keys, cfg)
  np.testing.assert_array_equal(q[:, 0, :, 0, 0], f_q)
  np.testing.assert_array_equal(k[:, 0, :, 0, 0], f_k)
  assert not np.array_equal(f_q, f_k)  # independent crops


def test_contrast_top1_and_means_ignore_masked_entries():
  pos = jnp.array([0.5, 0.1])
  neg = jnp.array([[0.4, -jnp.inf, 0.2], [0.3, 0.0, -jnp.inf]])
  got = diagnostics.contrast(pos, neg)
  np.testing.assert_allclose(got['top1'], 0.5)
  np.testing.assert_allclose(got['pos_cos'], 0.3)
  np.testing.assert_allclose(got['neg_cos'], (0.3 + 0.15) / 2)
  got = diagnostics.contrast(pos, neg, valid=jnp.array([True, False]))
  np.testing.assert_allclose(got['top1'], 1.0)


def test_alignment_and_uniformity_match_numpy():
  rng = np.random.default_rng(2)
  z = rng.normal(size=(7, 4))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  w = rng.normal(size=(7, 4))
  w /= np.linalg.norm(w, axis=1, keepdims=True)
  sq = [
    np.sum((z[i] - z[j]) ** 2) for i in range(7) for j in range(7) if i != j
  ]
  want_u = np.log(np.mean(np.exp(-2.0 * np.array(sq))))
  np.testing.assert_allclose(
    diagnostics.uniformity(jnp.asarray(z, jnp.float32)), want_u, rtol=1e-4
  )
  np.testing.assert_allclose(
    diagnostics.alignment(jnp.asarray(z), jnp.asarray(w)),
    np.mean(np.sum((z - w) ** 2, 1)),
    rtol=1e-5,
  )
  # Identical embeddings: uniformity 0 (the collapsed end of the scale).
  same = jnp.ones((4, 3)) / np.sqrt(3)
  np.testing.assert_allclose(diagnostics.uniformity(same), 0.0, atol=1e-6)


def test_queue_fill():
  fill = [
    float(diagnostics.queue_fill(jnp.asarray(s), 64, 512))
    for s in (0, 3, 7, 20)
  ]
  assert fill == [0.125, 0.5, 1.0, 1.0]
