"""Small building blocks shared by the models (init schemes of the released code)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _bucketed(draw, key, shape):
  """``draw(key, shape)`` for an eager key, from one program per size bucket.

  Eager random draws compile an XLA program per shape: ~30 shapes and ~9 s
  of a 2-core CPU for the AGCN encoder, before its first step. Threefry is
  counter-based (``jax_threefry_partitionable``, JAX's default): element i
  of the random bits does not depend on the draw's length. So the draw
  takes a power-of-two-long vector (~15 lengths, each compiled once) and is
  cut on the host. The uniform and normal draws come out bit for bit as
  drawn directly (tests/test_models.py, and every initial weight of both
  backbones at four widths); erfinv on its own did not (``weight_init``).
  None for a traced key, the other threefry mode or an empty shape: the
  caller then draws directly.
  """
  size = math.prod(shape)
  if (
    isinstance(key, jax.core.Tracer)
    or not jax.config.jax_threefry_partitionable
    or size == 0
  ):
    return None
  flat = draw(key, (max(64, 1 << (size - 1).bit_length()),))
  return np.asarray(flat)[:size].reshape(shape)


def standard_normal(key, shape, dtype=jnp.float32):
  """``jax.random.normal(key, shape, dtype)``, bit for bit (a NumPy array
  when drawn eagerly)."""
  x = _bucketed(lambda k, s: jax.random.normal(k, s, dtype), key, shape)
  return jax.random.normal(key, shape, dtype) if x is None else x


# Released SnipCLR code: conv/linear weights N(0, 0.02), BN scale N(1, 0.02).
# Both are computed as before this module drew in buckets (the weights as
# ``nnx.initializers.normal(0.02)``), so checkpoints and results recorded
# with the eager initializers reproduce exactly.
_WEIGHT_STD = 0.02
_direct_weight_init = nnx.initializers.normal(_WEIGHT_STD)


def weight_init(key, shape, dtype=jnp.float32):
  """``nnx.initializers.normal(0.02)``, bit for bit: sqrt(2) * std scales
  erfinv of a uniform draw on (-1, 1)."""
  if jnp.dtype(dtype) != jnp.float32:
    return _direct_weight_init(key, shape, dtype)
  lo = np.nextafter(np.float32(-1.0), np.float32(0.0))

  u = _bucketed(
    lambda k, s: jax.random.uniform(k, s, jnp.float32, lo, 1.0), key, shape
  )
  if u is None:
    return _direct_weight_init(key, shape, dtype)
  # erfinv per shape, as the direct initializer computes it: on a longer
  # vector XLA's code for it rounds a few small arrays' values differently.
  e = np.asarray(jax.lax.erf_inv(jnp.asarray(u)))
  return jnp.asarray(np.float32(np.sqrt(2)) * np.float32(_WEIGHT_STD) * e)


def bn_scale_init(key, shape, dtype=jnp.float32):
  # Weak Python scalars keep the draw's dtype, in NumPy (an eager draw, so no
  # per-shape XLA op) as in JAX.
  return jnp.asarray(1.0 + 0.02 * standard_normal(key, shape, dtype))


def _scale_and_shift(x, mean, var, scale, bias, epsilon):
  return (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias


def _normalize(x, scale, bias, epsilon):
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axes) - jnp.square(mean))
  return _scale_and_shift(x, mean, var, scale, bias, epsilon), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_with_batch_statistics(x, scale, bias, epsilon):
  """(y, mean, var): x normalised over every axis but the last with its own
  biased mean and variance, then scaled and shifted (training-mode BN).

  The backward pass is the textbook one, two reductions and one element-wise
  pass: dx = scale / sigma * (g - mean(g) - xhat * mean(g * xhat)). XLA's
  derivative of the forward pass (through E[x^2] - mean^2) takes more passes
  over x: forward + backward of BN + ReLU alone at (16, 75, 25, 256), 39 ms
  against 15 ms; in the finetune step's op profile, element-wise fusions
  467 -> 418 ms (docs/bench/vs_torch.md). The clamp of a negative
  rounding-error variance to 0 is not differentiated."""
  return _normalize(x, scale, bias, epsilon)


def _normalize_fwd(x, scale, bias, epsilon):
  y, mean, var = _normalize(x, scale, bias, epsilon)
  return (y, mean, var), (x, scale, mean, var)


def _normalize_bwd(epsilon, residuals, cotangents):
  x, scale, mean, var = residuals
  g, g_mean, g_var = cotangents
  axes = tuple(range(x.ndim - 1))
  n = math.prod(x.shape[:-1])
  inv_std = jax.lax.rsqrt(var + epsilon)
  centred = x - mean
  g = g.astype(x.dtype)
  d_bias = jnp.sum(g, axes)
  d_scale = jnp.sum(g * centred, axes) * inv_std
  dx = (scale * inv_std) * (g - d_bias / n - centred * (inv_std * d_scale / n))
  # The statistics are outputs too (the running averages read them).
  dx = dx + (g_mean + 2.0 * g_var * centred) / n
  return dx, d_scale.astype(scale.dtype), d_bias.astype(scale.dtype)


normalize_with_batch_statistics.defvjp(_normalize_fwd, _normalize_bwd)


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
      n = math.prod(x.shape[:-1])
      if n < 2:
        raise ValueError(
          f'BatchNorm in training needs more than 1 value per '
          f'channel, got input shape {x.shape}'
        )
      xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
      y, mean, var = normalize_with_batch_statistics(
        xf, scale, bias, self.epsilon
      )
      m = self.momentum
      self.mean[...] = jax.lax.stop_gradient(
        m * self.mean[...] + (1 - m) * mean
      )
      self.var[...] = jax.lax.stop_gradient(
        m * self.var[...] + (1 - m) * var * (n / (n - 1))
      )
      return y.astype(x.dtype)
    y = _scale_and_shift(x, mean, var, scale, bias, self.epsilon)
    return y.astype(x.dtype)


def batch_norm(features, rngs):
  # PyTorch BatchNorm momentum 0.1 == Flax momentum 0.9.
  return BatchNorm(
    features, momentum=0.9, epsilon=1e-5, scale_init=bn_scale_init, rngs=rngs
  )


def materialize(*arrays):
  """The arrays as buffers of their own, before a matmul transposes them.

  Left alone, XLA:CPU fuses the elementwise ops that produce an operand
  (BatchNorm, ReLU and residual adds, forward ones recomputed or the
  backward's own) into the copy that lays it out for a weight-gradient
  matmul, and that fused copy reads its 10-24 inputs in transposed, strided
  order: up to 160 ms for one (16, 38, 25, 256) tensor, where computing it
  contiguously and then transposing takes a few ms. The same happens in a
  forward pass to a matmul's transposed operand (``agcn.joint_affinity``).
  The barrier makes XLA compute the operand first (README, "Speed": the
  width-1 finetune step 6.6 s -> 4.6 s). Only on the CPU, where it was
  measured: GPU backends fuse and lay out differently, and no GPU was at
  hand to check them.
  """
  if jax.default_backend() != 'cpu':
    return arrays
  return jax.lax.optimization_barrier(arrays)


@jax.custom_vjp
def matmul(x, kernel):
  """x @ kernel over x's last axis, with the backward pass of ``materialize``."""
  return jnp.dot(x, kernel)


def _matmul_fwd(x, kernel):
  return jnp.dot(x, kernel), (x, kernel)


def _matmul_bwd(residuals, g):
  x, kernel = residuals
  x, g = materialize(x, g)
  dx = jnp.dot(g, kernel.T)
  dk = jnp.dot(
    x.reshape(-1, x.shape[-1]).T,
    g.reshape(-1, g.shape[-1]),
    preferred_element_type=jnp.float32,
  )
  return dx, dk.astype(kernel.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nnx.Linear):
  """``nnx.Linear`` (same parameters, initialisation and forward pass) whose
  gradient takes ``matmul``'s path."""

  def __call__(self, x):
    kernel = self.kernel[...]
    bias = None if self.bias is None else self.bias[...]
    x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
    y = matmul(x, kernel)
    return y if bias is None else y + bias


def dense(cin, cout, rngs, use_bias=True):
  return Dense(cin, cout, use_bias=use_bias, kernel_init=weight_init, rngs=rngs)


def scaled(channels, width):
  """Channel count under a width multiplier (the demo runs narrow models)."""
  return max(1, int(round(channels * width)))


def _conv_over_time(x, kernel, stride):
  pad = (kernel.shape[0] - 1) // 2
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    (stride, 1),
    ((pad, pad), (0, 0)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )


def _kernel_grad(x, g, size, stride):
  """dW[k, c, d] = sum over (n, t, v) of x_pad[n, t*stride + k, v, c] g[n, t, v, d].

  Written as a 1-D convolution over time with the input channels as its batch
  and the (n, v) pairs as its features. XLA's CPU backend runs its own weight
  gradient of a (9, 1) convolution 8-10x slower than this at 64-256 channels
  (README, "Speed"); the sum is the same.
  """
  n, t, v, c = x.shape
  t_out, d = g.shape[1], g.shape[3]
  pad = (size - 1) // 2
  lhs = x.transpose(3, 1, 0, 2).reshape(c, t, n * v)
  rhs = g.transpose(1, 0, 2, 3).reshape(t_out, n * v, d)
  out = jax.lax.conv_general_dilated(
    lhs,
    rhs,
    (1,),
    ((pad, pad),),
    rhs_dilation=(stride,),
    dimension_numbers=('NHC', 'HIO', 'NHC'),
    preferred_element_type=jnp.float32,
  )
  return out[:, :size].transpose(1, 0, 2)[:, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_over_time(x, kernel, stride):
  """(N, T, V, C_in) * (K, 1, C_in, C_out) -> (N, T', V, C_out): a convolution
  over time with zero padding (K - 1) // 2 on each side (K odd), as
  ``nnx.Conv`` computes it, with a faster backward pass: the weight gradient
  of ``_kernel_grad``, the input gradient of ``_strided_input_grad`` for
  stride > 1, and ``materialize``d operands."""
  return _conv_over_time(x, kernel, stride)


def _conv_over_time_fwd(x, kernel, stride):
  return _conv_over_time(x, kernel, stride), (x, kernel)


def _strided_input_grad(g, kernel, t_in, stride):
  """dx of a strided ``_conv_over_time``, one stride-1 convolution per phase.

  x[s*u + r] gets sum over m of W[s*m + q]^T g[u + c - m], with
  q = (r + pad) mod s and c = (r + pad) // s: a convolution of g with every
  s-th tap, reversed. XLA writes this gradient as one convolution with a
  dilated input, which its CPU backend leaves to Eigen (388 ms at
  (16, 75, 25, 256), where the two phase convolutions take ~90 ms).
  """
  size = kernel.shape[0]
  pad = (size - 1) // 2
  n, t_out, v, _ = g.shape
  cin = kernel.shape[2]
  per_phase = -(-t_in // stride)
  phases = []
  for r in range(stride):
    q, c = (r + pad) % stride, (r + pad) // stride
    taps = kernel[q::stride]
    length = -(-(t_in - r) // stride)
    if taps.shape[0] == 0:  # a 1-tap kernel reaches phase 0 only
      phases.append(jnp.zeros((n, per_phase, v, cin), g.dtype))
      continue
    lo = taps.shape[0] - 1 - c
    hi = length - 1 + c - (t_out - 1)
    h = jax.lax.conv_general_dilated(
      g,
      jnp.flip(taps, 0).transpose(0, 1, 3, 2),
      (1, 1),
      ((lo, hi), (0, 0)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    phases.append(jnp.pad(h, ((0, 0), (0, per_phase - length), (0, 0), (0, 0))))
  dx = jnp.stack(phases, 2).reshape(n, per_phase * stride, v, cin)
  return dx[:, :t_in]


def _conv_over_time_bwd(stride, residuals, g):
  x, kernel = residuals
  x, g = materialize(x, g)
  if stride == 1:
    _, input_vjp = jax.vjp(lambda x: _conv_over_time(x, kernel, stride), x)
    (dx,) = input_vjp(g)
  else:
    dx = _strided_input_grad(g, kernel, x.shape[1], stride)
  dk = _kernel_grad(x, g, kernel.shape[0], stride)
  return dx, dk.astype(kernel.dtype)


conv_over_time.defvjp(_conv_over_time_fwd, _conv_over_time_bwd)


def time_conv_as_matmul(x, kernel, stride):
  """(N, T, C_in) * (K, C_in, C_out) -> (N, T', C_out), the same convolution as
  ``conv_over_time`` without a joints axis, as one matmul of the K shifted
  copies of x side by side (im2col). XLA:CPU's convolution is slow at this
  shape: at (8, 300) frames x 640 -> 640 channels, kernel 3, 182 ms against
  28 ms for the matmul (896 channels: 353 vs 48 ms), forward alone."""
  size = kernel.shape[0]
  pad = (size - 1) // 2
  t_out = (x.shape[1] + 2 * pad - size) // stride + 1
  x = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))
  taps = [
    jax.lax.slice_in_dim(x, j, j + stride * (t_out - 1) + 1, stride, axis=1)
    for j in range(size)
  ]
  cols = taps[0] if size == 1 else jnp.concatenate(taps, axis=-1)
  return matmul(cols, kernel.reshape(-1, kernel.shape[-1]))


class TimeConv(nnx.Conv):
  """Convolution over time (axis 1) of (N, T, C) or (N, T, V, C) features:
  kernel ``size`` (odd), 'same' zero padding, ``stride``, bias.

  The parameters and their initialisation (released N(0, 0.02)) are
  ``nnx.Conv``'s, and so is the forward pass with a joints axis; the
  gradient takes ``conv_over_time``'s path. Without one it is
  ``time_conv_as_matmul``.
  """

  def __init__(self, cin, cout, size, *, stride=1, joints=False, rngs):
    if size % 2 != 1:
      raise ValueError(f'TimeConv needs an odd kernel size, got {size}')
    pad = (size - 1) // 2
    extra = 1 if joints else 0
    super().__init__(
      cin,
      cout,
      (size,) + (1,) * extra,
      strides=(stride,) + (1,) * extra,
      padding=((pad, pad),) + ((0, 0),) * extra,
      kernel_init=weight_init,
      rngs=rngs,
    )
    self.time_stride = stride

  def __call__(self, x):
    kernel = self.kernel[...]
    bias = None if self.bias is None else self.bias[...]
    x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
    if x.ndim == 3:
      y = time_conv_as_matmul(x, kernel, self.time_stride)
    else:
      y = conv_over_time(x, kernel, self.time_stride)
    return y if bias is None else y + bias
