"""Pretraining augmentations checked against NumPy references and key bookkeeping."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skel_jax import augment
from skel_jax import config_defaults
from skel_jax import graph
from skel_jax.config_defaults import pretrain_config

M, T, V = 2, 24, 25


def _sample(seed=0, t=T):
  # Distinct values everywhere so a crop offset is identifiable.
  return (
    np.random.default_rng(seed).normal(size=(M, t, V, 3)).astype(np.float32)
  )


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


# ----------------------------------------------------------- crop ----


def test_temporal_crop_is_window_of_symmetric_padding():
  x = _sample()
  ratio = 6
  pad = T // ratio
  padded = np.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)), mode='symmetric')
  crop = jax.jit(jax.vmap(lambda k: augment.temporal_crop(x, k, ratio)))
  out = np.asarray(crop(_keys(64)))
  offsets = set()
  for y in out:
    hits = [
      o for o in range(2 * pad + 1) if np.array_equal(y, padded[:, o : o + T])
    ]
    assert len(hits) == 1  # exactly one window matches (values are distinct)
    offsets.add(hits[0])
  # 64 keys over 9 offsets: every offset in [0, 2 * pad] shows up.
  assert offsets == set(range(2 * pad + 1))


def test_temporal_crop_short_clip_is_identity():
  x = _sample(t=5)  # 5 // 6 == 0: nothing to pad
  np.testing.assert_array_equal(
    augment.temporal_crop(x, jax.random.key(0), 6), x
  )


# ---------------------------------------------------------- shear ----


def test_shear_zero_amplitude_is_identity():
  x = _sample()
  np.testing.assert_allclose(
    augment.shear(x, jax.random.key(3), 0.0), x, atol=1e-6
  )


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_shear_is_unit_diagonal_linear_map(seed):
  x = _sample()
  a = 0.5
  y = np.asarray(augment.shear(x, jax.random.key(seed), a))
  p = x.reshape(-1, 3).astype(np.float64)
  q = y.reshape(-1, 3).astype(np.float64)
  # q = p S^T  ->  solve for S^T by least squares.
  st, *_ = np.linalg.lstsq(p, q, rcond=None)
  s = st.T
  np.testing.assert_allclose(np.diag(s), 1.0, atol=1e-5)
  off = s[~np.eye(3, dtype=bool)]
  assert np.all(np.abs(off) <= a + 1e-5)
  assert np.all(np.abs(off) > 1e-4)  # actually sheared
  np.testing.assert_allclose(q, p @ s.T, atol=1e-5)


# ------------------------------------------------ noise/blur/mask ----


@pytest.mark.parametrize(
  'fn',
  [
    augment.gaussian_noise,
    # sigma >= 1 so the blur visibly changes the signal (sigma 0.1 ~ identity).
    functools.partial(augment.gaussian_blur, sigma_range=(1.0, 2.0)),
    augment.zero_axis,
  ],
  ids=['noise', 'blur', 'zero_axis'],
)
def test_prob_zero_is_identity_prob_one_changes(fn):
  x = _sample()
  for seed in range(3):
    key = jax.random.key(seed)
    np.testing.assert_array_equal(fn(x, key, prob=0.0), x)
    assert not np.allclose(fn(x, key, prob=1.0), x, atol=1e-4)


def test_blur_constant_signal_unchanged_away_from_edges():
  t, ks = 40, 15
  x = np.full((M, t, V, 3), 2.5, np.float32)
  half = (ks - 1) // 2
  for seed in range(3):
    y = np.asarray(
      augment.gaussian_blur(x, jax.random.key(seed), ks, (0.1, 2.0), prob=1.0)
    )
    np.testing.assert_allclose(y[:, half : t - half], 2.5, rtol=1e-5)
  # Zero padding darkens the edges for a wide kernel.
  y = np.asarray(
    augment.gaussian_blur(x, jax.random.key(0), ks, (1.9, 2.0), prob=1.0)
  )
  assert np.all(y[:, 0] < 2.5 - 1e-3) and np.all(y[:, -1] < 2.5 - 1e-3)


def test_blur_kernel_sums_to_one_and_is_gaussian():
  # Blurring a unit impulse in the middle yields the kernel itself.
  t, ks, c = 41, 15, 20
  x = np.zeros((1, t, 1, 1), np.float32)
  x[0, c] = 1.0
  sig = 1.3
  y = np.asarray(
    augment.gaussian_blur(x, jax.random.key(0), ks, (sig, sig), prob=1.0)
  )[0, :, 0, 0]
  np.testing.assert_allclose(y.sum(), 1.0, rtol=1e-5)
  r = np.arange(ks) - (ks - 1) / 2
  w = np.exp(-0.5 * (r / sig) ** 2)
  np.testing.assert_allclose(
    y[c - 7 : c + 8], w / w.sum(), rtol=1e-4, atol=1e-7
  )
  np.testing.assert_allclose(y[: c - 7], 0.0, atol=1e-7)


def test_zero_axis_zeros_exactly_one_axis():
  x = np.abs(_sample()) + 0.1  # no zeros before masking
  seen = set()
  for seed in range(16):
    y = np.asarray(augment.zero_axis(x, jax.random.key(seed), prob=1.0))
    zeroed = [a for a in range(3) if np.all(y[..., a] == 0)]
    assert len(zeroed) == 1
    kept = [a for a in range(3) if a != zeroed[0]]
    np.testing.assert_array_equal(y[..., kept], x[..., kept])
    seen.add(zeroed[0])
  assert seen == {0, 1, 2}


# ---------------------------------------------------------- views ----


def test_two_views_depend_only_on_key_step_and_global_index():
  cfg = pretrain_config().augment
  n = 4
  base = jax.random.key(7)
  xs = np.stack([_sample(seed) for seed in range(n)])
  idx = np.arange(100, 100 + n)
  fn = jax.jit(
    lambda x, step, i: augment.two_views(
      x, augment.sample_keys(base, step, i), cfg
    )
  )
  q, k = fn(xs, 3, idx)
  assert q.shape == k.shape == xs.shape
  # Same samples, permuted positions: each sample gets the same views.
  perm = np.array([2, 0, 3, 1])
  qp, kp = fn(xs[perm], 3, idx[perm])
  np.testing.assert_allclose(qp, q[perm], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(kp, k[perm], rtol=1e-6, atol=1e-6)
  # A smaller batch (a different shard) holding samples 1 and 3.
  sub = np.array([3, 1])
  qs, ks = jax.jit(
    lambda x, step, i: augment.two_views(
      x, augment.sample_keys(base, step, i), cfg
    )
  )(xs[sub], 3, idx[sub])
  np.testing.assert_allclose(qs, q[sub], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ks, k[sub], rtol=1e-6, atol=1e-6)
  # Another step gives other views; query and key views differ too.
  q4, k4 = fn(xs, 4, idx)
  for i in range(n):
    assert not np.allclose(q4[i], q[i])
    assert not np.allclose(k4[i], k[i])
    assert not np.allclose(q[i], k[i])


def test_sample_keys_match_fold_in_chain():
  base = jax.random.key(1)
  keys = augment.sample_keys(base, 5, jnp.arange(3))
  for i in range(3):
    want = jax.random.fold_in(jax.random.fold_in(base, 5), i)
    np.testing.assert_array_equal(
      jax.random.key_data(keys[i]), jax.random.key_data(want)
    )


# ---------------------------------------------------------------------------
# AimCLR's extreme view and RVTCLR's relative-tempo views.
# ---------------------------------------------------------------------------
def test_rotation_matches_aimclr_formula():
  import math

  x = np.random.default_rng(0).normal(size=(1, 10, 25, 3)).astype(np.float32)
  key = jax.random.PRNGKey(3)
  got = np.asarray(augment.random_rotate(jnp.asarray(x), key))
  k_axis, k_angle = jax.random.split(key)
  main = int(jax.random.randint(k_axis, (), 0, 3))
  u = np.asarray(jax.random.uniform(k_angle, (3,)))

  def rot(axis, a):  # AimCLR tools.random_rotate's matrices
    c, s = math.cos(a), math.sin(a)
    return [
      np.array([[1, 0, 0], [0, c, s], [0, -s, c]]),
      np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]),
      np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]),
    ][axis]

  want = x.astype(np.float64)
  for axis in range(3):
    degrees = (30 if axis == main else 1) * u[axis]
    want = want @ rot(axis, math.radians(degrees)).T
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_flips_permute_joints_and_reverse_time():
  x = jnp.arange(2 * 4 * 25 * 3, dtype=jnp.float32).reshape(2, 4, 25, 3)
  flipped = augment.spatial_flip(x, jax.random.PRNGKey(0), prob=1.0)
  # graph.FLIP_PERMUTATION is checked against the joint names in
  # tests/test_graph.py.
  np.testing.assert_array_equal(flipped, x[:, :, list(graph.FLIP_PERMUTATION)])
  np.testing.assert_array_equal(
    augment.time_flip(x, jax.random.PRNGKey(0), prob=1.0), x[:, ::-1]
  )
  np.testing.assert_array_equal(
    augment.spatial_flip(x, jax.random.PRNGKey(0), prob=0.0), x
  )


def test_unnormalised_blur_scales_like_the_release():
  x = jnp.ones((1, 40, 25, 3))
  key = jax.random.PRNGKey(1)
  norm = augment.gaussian_blur(x, key, prob=1.0)
  raw = augment.gaussian_blur(x, key, prob=1.0, normalize=False)
  # Away from the zero-padded ends a normalised blur keeps a constant signal;
  # the release's kernel multiplies it by the kernel's sum (>= 1).
  np.testing.assert_allclose(norm[:, 10:30], 1.0, atol=1e-5)
  assert float(raw[0, 20, 0, 0]) >= 1.0 - 1e-6
  np.testing.assert_allclose(raw[:, 10:30] / raw[0, 20, 0, 0], 1.0, atol=1e-5)


def test_relative_tempo_views():
  n, t = 6, 16
  x = jnp.broadcast_to(
    jnp.arange(t, dtype=jnp.float32)[None, None, :, None, None],
    (n, 1, t, 25, 3),
  )
  keys = augment.sample_keys(jax.random.PRNGKey(0), 0, jnp.arange(n))
  q, k, other = augment.relative_tempo(x, x + 100.0, keys, ratio=2)
  assert q.shape == (n, 1, t // 2, 25, 3)
  slow, fast = np.arange(t // 2), 2 * np.arange(t // 2)
  for i in range(n):
    frames_q = np.asarray(q[i, 0, :, 0, 0])
    # Query and key share a tempo; k_other is the key at the other one.
    np.testing.assert_array_equal(np.asarray(k[i, 0, :, 0, 0]) - 100, frames_q)
    other_frames = np.asarray(other[i, 0, :, 0, 0]) - 100
    assert {tuple(frames_q), tuple(other_frames)} == {tuple(slow), tuple(fast)}


def test_relative_tempo_coin_is_fair_and_per_video():
  """Guards against a coin that always (or never) picks the fast tempo: each
  video's tempo is its own Bernoulli(1/2) draw from fold_in(key, 3)."""
  n, t = 64, 8
  x = jnp.broadcast_to(
    jnp.arange(t, dtype=jnp.float32)[None, None, :, None, None], (n, 1, t, 1, 1)
  )
  keys = augment.sample_keys(jax.random.PRNGKey(5), 2, jnp.arange(n))
  q, _, other = augment.relative_tempo(x, x, keys, ratio=2)
  fast = np.asarray(q[:, 0, :, 0, 0] == 2 * np.arange(t // 2)).all(-1)
  slow = np.asarray(q[:, 0, :, 0, 0] == np.arange(t // 2)).all(-1)
  assert (fast ^ slow).all()
  want = np.array(
    [bool(jax.random.bernoulli(jax.random.fold_in(k, 3))) for k in keys]
  )
  np.testing.assert_array_equal(fast, want)
  # 64 fair coins: 20..44 heads holds with probability > 0.999.
  assert 20 <= fast.sum() <= 44
  # k_other plays at the other tempo.
  np.testing.assert_array_equal(
    np.asarray(other[:, 0, 1, 0, 0]), np.where(fast, 1, 2)
  )


def test_extreme_view_is_deterministic_per_key():
  cfg = config_defaults.pretrain_config().augment
  x = jnp.asarray(
    np.random.default_rng(0).normal(size=(4, 1, 32, 25, 3)), jnp.float32
  )
  keys = augment.sample_keys(jax.random.PRNGKey(0), 3, jnp.arange(4))
  a = augment.third_view(x, keys, cfg, 'extreme')
  b = augment.third_view(x, keys, cfg, 'extreme')
  np.testing.assert_array_equal(a, b)
  assert a.shape == x.shape and np.all(np.isfinite(np.asarray(a)))
  # Its own key stream: not the query or key view.
  q, k = augment.two_views(x, keys, cfg)
  assert not np.allclose(a, q) and not np.allclose(a, k)
