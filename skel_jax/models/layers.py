"""Small building blocks shared by the models (init schemes of the released code)."""
import jax
import jax.numpy as jnp
from flax import nnx

# Released SnipCLR code: conv/linear weights N(0, 0.02), BN scale N(1, 0.02).
weight_init = nnx.initializers.normal(0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def batch_norm(features, rngs):
  # PyTorch BatchNorm momentum 0.1 == Flax momentum 0.9.
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5,
                       scale_init=bn_scale_init, rngs=rngs)


def dense(cin, cout, rngs, use_bias=True):
  return nnx.Linear(cin, cout, use_bias=use_bias, kernel_init=weight_init,
                    rngs=rngs)


def scaled(channels, width):
  """Channel count under a width multiplier (the demo runs narrow models)."""
  return max(1, int(round(channels * width)))
