"""On-device pretraining augmentations (jit-able, one PRNG key per sample).

All functions act on ONE sample ``x`` of shape (M, T, V, 3) and are vmapped
over the batch. Keys come from the global sample index and the step (see
``sample_keys``), so augmentations do not depend on how the batch is sharded.
"""
import jax
import jax.numpy as jnp


def sample_keys(base_key, step, indices):
  """Per-sample keys: fold in the step, then each sample's global index."""
  step_key = jax.random.fold_in(base_key, step)
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(indices)


def temporal_crop(x, key, padding_ratio=6):
  """Mirror-pad T // ratio frames on both sides, crop T frames at a random offset.

  AimCLR pads with the first/last ``pad`` frames in reversed order, i.e. the
  edge frame is repeated: NumPy's 'symmetric' mode (METHOD.md says "reflect").
  """
  t = x.shape[1]
  pad = t // padding_ratio
  if pad == 0:
    return x
  padded = jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)), mode='symmetric')
  offset = jax.random.randint(key, (), 0, 2 * pad + 1)
  return jax.lax.dynamic_slice_in_dim(padded, offset, t, axis=1)


def shear(x, key, amplitude=0.5):
  """p' = S p with unit diagonal and six off-diagonal entries U(-a, a)."""
  off = jax.random.uniform(key, (3, 3), minval=-amplitude, maxval=amplitude)
  s = jnp.where(jnp.eye(3, dtype=bool), 1.0, off).astype(x.dtype)
  return jnp.einsum('mtvc,dc->mtvd', x, s)


def gaussian_noise(x, key, std=0.01, prob=0.5):
  k_apply, k_noise = jax.random.split(key)
  noise = std * jax.random.normal(k_noise, x.shape, x.dtype)
  return jnp.where(jax.random.uniform(k_apply) < prob, x + noise, x)


def gaussian_blur(x, key, kernel_size=15, sigma_range=(0.1, 2.0), prob=0.5):
  """Temporal Gaussian blur with a random sigma (zero padding, as AimCLR's conv)."""
  k_apply, k_sigma = jax.random.split(key)
  sigma = jax.random.uniform(k_sigma, (), minval=sigma_range[0],
                             maxval=sigma_range[1])
  r = jnp.arange(kernel_size, dtype=x.dtype) - (kernel_size - 1) / 2
  w = jnp.exp(-0.5 * (r / sigma) ** 2)
  w = w / jnp.sum(w)
  m, t, v, c = x.shape
  # Blur every (person, joint, coord) signal along time as one 1-D conv.
  sig = jnp.moveaxis(x, 1, -1).reshape(-1, 1, t)
  blurred = jax.lax.conv_general_dilated(
      sig, w[None, None, :], (1,), [((kernel_size - 1) // 2,) * 2])
  blurred = jnp.moveaxis(blurred.reshape(m, v, c, t), -1, 1)
  return jnp.where(jax.random.uniform(k_apply) < prob, blurred, x)


def zero_axis(x, key, prob=0.5):
  """Zero one of the x/y/z coordinates of every joint (AimCLR ``axis_mask``)."""
  k_apply, k_axis = jax.random.split(key)
  axis = jax.random.randint(k_axis, (), 0, 3)
  keep = (jnp.arange(3) != axis).astype(x.dtype)
  return jnp.where(jax.random.uniform(k_apply) < prob, x * keep, x)


def augment(x, key, cfg, strong):
  """The released view recipe: crop + shear; the strong (query) view adds
  noise, blur and axis masking, each with its own probability."""
  keys = jax.random.split(key, 5)
  if cfg.crop_padding_ratio > 0:
    x = temporal_crop(x, keys[0], cfg.crop_padding_ratio)
  if cfg.shear_amplitude > 0:
    x = shear(x, keys[1], cfg.shear_amplitude)
  if strong:
    x = gaussian_noise(x, keys[2], cfg.noise_std, cfg.noise_prob)
    x = gaussian_blur(x, keys[3], cfg.blur_kernel, tuple(cfg.blur_sigma),
                      cfg.blur_prob)
    x = zero_axis(x, keys[4], cfg.axis_mask_prob)
  return x


def two_views(batch_x, keys, cfg):
  """(N, M, T, V, 3) and per-sample keys -> (query view, key view)."""
  def one(x, key):
    kq, kk = jax.random.split(key)
    return augment(x, kq, cfg, strong=True), augment(x, kk, cfg, strong=False)
  return jax.vmap(one)(batch_x, keys)
