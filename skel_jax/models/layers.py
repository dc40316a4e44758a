"""Small building blocks shared by the models (init schemes of the released code)."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

# Released SnipCLR code: conv/linear weights N(0, 0.02), BN scale N(1, 0.02).
weight_init = nnx.initializers.normal(0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class BatchNorm(nnx.BatchNorm):
  """nnx.BatchNorm with PyTorch's running-variance update.

  Both normalise with the biased batch variance, but PyTorch folds the
  unbiased one (x n / (n - 1), n = elements reduced per channel) into the
  running variance and Flax the biased one; PyTorch's rule is followed so that
  eval-mode outputs match the release's. Same variables (``scale``, ``bias``,
  ``mean``, ``var``) as nnx.BatchNorm: checkpoints and paths are unchanged.
  Statistics are float32 (also under bf16 compute) and reduce every axis but
  the last of the global array, so under jit with a sharded batch they cover
  the global batch (SyncBN) and n counts it whole.
  """

  def __call__(self, x, use_running_average=None):
    if use_running_average is None:
      use_running_average = self.use_running_average
    # Same dtype promotion as nnx.BatchNorm (input, statistics, params).
    x, mean, var, scale, bias = self.promote_dtype(
      (x, self.mean[...], self.var[...], self.scale[...], self.bias[...]),
      dtype=self.dtype,
    )
    if not use_running_average:
      axes = tuple(range(x.ndim - 1))
      n = math.prod(x.shape[:-1])
      if n < 2:
        raise ValueError(
          f'BatchNorm in training needs more than 1 value per '
          f'channel, got input shape {x.shape}'
        )
      xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
      mean = jnp.mean(xf, axes)
      var = jnp.maximum(0.0, jnp.mean(jnp.square(xf), axes) - jnp.square(mean))
      m = self.momentum
      self.mean[...] = jax.lax.stop_gradient(
        m * self.mean[...] + (1 - m) * mean
      )
      self.var[...] = jax.lax.stop_gradient(
        m * self.var[...] + (1 - m) * var * (n / (n - 1))
      )
    y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(x.dtype)


def batch_norm(features, rngs):
  # PyTorch BatchNorm momentum 0.1 == Flax momentum 0.9.
  return BatchNorm(
    features, momentum=0.9, epsilon=1e-5, scale_init=bn_scale_init, rngs=rngs
  )


def dense(cin, cout, rngs, use_bias=True):
  return nnx.Linear(
    cin, cout, use_bias=use_bias, kernel_init=weight_init, rngs=rngs
  )


def scaled(channels, width):
  """Channel count under a width multiplier (the demo runs narrow models)."""
  return max(1, int(round(channels * width)))
