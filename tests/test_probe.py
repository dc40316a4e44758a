"""The frozen-feature probe's statistics against hand-worked values."""

import numpy as np

from skel_jax import probe


def test_group_share_hand_worked():
  # Two groups with means -1 and +1 and within-group spread 0.5 (1-D):
  # total SS = 4 * (1 + 0.25) = 5, between = 4 * 1 = 4 -> 0.8.
  x = np.array([[-1.5], [-0.5], [0.5], [1.5]])
  groups = np.array([0, 0, 1, 1])
  np.testing.assert_allclose(probe._group_share(x, groups), 0.8)
  # A pure time code is explained entirely by time.
  np.testing.assert_allclose(
    probe._group_share(
      np.array([[0.0], [1.0], [0.0], [1.0]]), np.array([0, 1, 0, 1])
    ),
    1.0,
  )
  # Groups that share one mean explain nothing.
  np.testing.assert_allclose(
    probe._group_share(x, np.array([0, 1, 1, 0])), 0.0, atol=1e-12
  )


def test_ridge_fit_separates_linearly_separable_classes():
  rng = np.random.default_rng(0)
  centres = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
  y = rng.integers(0, 3, size=300)
  x = centres[y] + rng.normal(size=(300, 2))
  predict = probe.ridge_fit(x, y, num_outputs=3)
  assert np.mean(predict(x) == y) > 0.97
  # Shuffled labels carry no signal: close to chance on fresh data.
  y_new = rng.integers(0, 3, size=300)
  x_new = centres[y_new] + rng.normal(size=(300, 2))
  shuffled = probe.ridge_fit(x, rng.permutation(y), num_outputs=3)
  assert np.mean(shuffled(x_new) == y_new) < 0.6
