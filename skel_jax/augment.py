"""On-device pretraining augmentations (jit-able, one PRNG key per sample).

All functions act on ONE sample ``x`` of shape (M, T, V, 3) and are vmapped
over the batch. Keys come from the global sample index and the step (see
``sample_keys``), so augmentations do not depend on how the batch is sharded.
"""

import jax
import jax.numpy as jnp

from skel_jax import graph


def sample_keys(base_key, step, indices):
  """Per-sample keys: fold in the step, then each sample's global index."""
  step_key = jax.random.fold_in(base_key, step)
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(indices)


def crop_frames(t, key, padding_ratio=6):
  """Source frame index of each frame of a temporal crop: (T,) int32.

  Mirror-pad T // ratio frames on both sides, take T frames at a random
  offset. AimCLR pads with the first/last ``pad`` frames in reversed order,
  i.e. the edge frame is repeated: NumPy's 'symmetric' mode (docs/method.md says
  "reflect"). The map also tells the pretraining step which snippets of two
  views show the same frames (content-correct positives and diagnostics).
  """
  pad = t // padding_ratio
  if pad == 0:
    return jnp.arange(t, dtype=jnp.int32)
  padded = jnp.pad(jnp.arange(t, dtype=jnp.int32), (pad, pad), mode='symmetric')
  offset = jax.random.randint(key, (), 0, 2 * pad + 1)
  return jax.lax.dynamic_slice_in_dim(padded, offset, t)


def temporal_crop(x, key, padding_ratio=6):
  """x (M, T, V, C) cropped as ``crop_frames`` says (same key, same crop)."""
  if x.shape[1] // padding_ratio == 0:
    return x
  return jnp.take(x, crop_frames(x.shape[1], key, padding_ratio), axis=1)


def shear(x, key, amplitude=0.5):
  """p' = S p with unit diagonal and six off-diagonal entries U(-a, a)."""
  off = jax.random.uniform(key, (3, 3), minval=-amplitude, maxval=amplitude)
  s = jnp.where(jnp.eye(3, dtype=bool), 1.0, off).astype(x.dtype)
  return jnp.einsum('mtvc,dc->mtvd', x, s)


def gaussian_noise(x, key, std=0.01, prob=0.5):
  k_apply, k_noise = jax.random.split(key)
  noise = std * jax.random.normal(k_noise, x.shape, x.dtype)
  return jnp.where(jax.random.uniform(k_apply) < prob, x + noise, x)


def gaussian_blur(
  x, key, kernel_size=15, sigma_range=(0.1, 2.0), prob=0.5, normalize=True
):
  """Temporal Gaussian blur with a random sigma (zero padding, as AimCLR's conv).

  AimCLR's ``GaussianBlurConv`` never divides the kernel by its sum, so its
  "blur" also scales coordinates by up to ~5x (sigma = 2). That is treated as
  a bug: ``normalize=True`` (default) blurs; ``False`` reproduces the release.
  """
  k_apply, k_sigma = jax.random.split(key)
  sigma = jax.random.uniform(
    k_sigma, (), minval=sigma_range[0], maxval=sigma_range[1]
  )
  r = jnp.arange(kernel_size, dtype=x.dtype) - (kernel_size - 1) / 2
  w = jnp.exp(-0.5 * (r / sigma) ** 2)
  if normalize:
    w = w / jnp.sum(w)
  m, t, v, c = x.shape
  # Blur every (person, joint, coord) signal along time as one 1-D conv.
  sig = jnp.moveaxis(x, 1, -1).reshape(-1, 1, t)
  blurred = jax.lax.conv_general_dilated(
    sig, w[None, None, :], (1,), [((kernel_size - 1) // 2,) * 2]
  )
  blurred = jnp.moveaxis(blurred.reshape(m, v, c, t), -1, 1)
  return jnp.where(jax.random.uniform(k_apply) < prob, blurred, x)


def zero_axis(x, key, prob=0.5):
  """Zero one of the x/y/z coordinates of every joint (AimCLR ``axis_mask``)."""
  k_apply, k_axis = jax.random.split(key)
  axis = jax.random.randint(k_axis, (), 0, 3)
  keep = (jnp.arange(3) != axis).astype(x.dtype)
  return jnp.where(jax.random.uniform(k_apply) < prob, x * keep, x)


def spatial_flip(x, key, prob=0.5):
  """Swap left/right limb joints (AimCLR ``transform_order['ntu']``); the
  coordinates are not mirrored, exactly as the release does."""
  order = jnp.asarray(graph.FLIP_PERMUTATION)
  return jnp.where(jax.random.uniform(key) < prob, x[:, :, order], x)


def time_flip(x, key, prob=0.5):
  return jnp.where(jax.random.uniform(key) < prob, x[:, ::-1], x)


def _rotation(axis, angle):
  """AimCLR's matrix R for one axis; a point p becomes p @ R.T."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  if axis == 0:
    return jnp.array([[1, 0, 0], [0, c, s], [0, -s, c]])
  if axis == 1:
    return jnp.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
  return jnp.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


def random_rotate(x, key, max_degrees=30.0, minor_degrees=1.0):
  """AimCLR ``random_rotate``: one random main axis turns by U(0, 30) degrees,
  the other two by U(0, 1) degrees, applied in x, y, z order."""
  k_axis, k_angle = jax.random.split(key)
  main = jax.random.randint(k_axis, (), 0, 3)
  u = jax.random.uniform(k_angle, (3,))
  degrees = jnp.where(jnp.arange(3) == main, max_degrees, minor_degrees) * u
  r = jnp.eye(3, dtype=x.dtype)
  for axis in range(3):
    r = r @ _rotation(axis, jnp.deg2rad(degrees[axis])).T.astype(x.dtype)
  return x @ r


def augment(x, key, cfg, strong):
  """The released view recipe: crop + shear; the strong (query) view adds
  noise, blur and axis masking, each with its own probability."""
  keys = jax.random.split(key, 5)
  if cfg.crop_padding_ratio > 0:
    x = temporal_crop(x, keys[0], cfg.crop_padding_ratio)
  if cfg.shear_amplitude > 0:
    x = shear(x, keys[1], cfg.shear_amplitude)
  if strong:
    x = _noise_blur_mask(x, keys[2:], cfg)
  return x


def view_frames(t, key, cfg):
  """The source frame map (T,) of ``augment(x, key, cfg, ...)``'s view."""
  if cfg.crop_padding_ratio > 0:
    return crop_frames(t, jax.random.split(key, 5)[0], cfg.crop_padding_ratio)
  return jnp.arange(t, dtype=jnp.int32)


def _noise_blur_mask(x, keys, cfg):
  x = gaussian_noise(x, keys[0], cfg.noise_std, cfg.noise_prob)
  x = gaussian_blur(
    x,
    keys[1],
    cfg.blur_kernel,
    tuple(cfg.blur_sigma),
    cfg.blur_prob,
    cfg.get('blur_normalize', True),
  )
  return zero_axis(x, keys[2], cfg.axis_mask_prob)


def extreme(x, key, cfg):
  """AimCLR's extreme view (``Feeder_triple._strong_aug``): crop, shear, then
  joint-order flip, rotation, time reversal, noise, blur and axis masking."""
  keys = jax.random.split(key, 8)
  x = augment(x, keys[0], cfg, strong=False)
  x = spatial_flip(x, keys[1], cfg.spatial_flip_prob)
  x = random_rotate(x, keys[2], cfg.rotate_degrees)
  x = time_flip(x, keys[3], cfg.time_flip_prob)
  return _noise_blur_mask(x, keys[4:7], cfg)


def _view_keys(key):
  """(query key, key-view key) of one sample: shared by the views and their
  frame maps, so both describe the same crops."""
  return jax.random.split(key)


def two_views(batch_x, keys, cfg, query_strong=True):
  """(N, M, T, V, 3) and per-sample keys -> (query view, key view)."""

  def one(x, key):
    kq, kk = _view_keys(key)
    return (
      augment(x, kq, cfg, strong=query_strong),
      augment(x, kk, cfg, strong=False),
    )

  return jax.vmap(one)(batch_x, keys)


def two_view_frames(t, keys, cfg):
  """Source frame maps (N, T) of ``two_views``' query and key views."""

  def one(key):
    kq, kk = _view_keys(key)
    return view_frames(t, kq, cfg), view_frames(t, kk, cfg)

  return jax.vmap(one)(keys)


def third_view(batch_x, keys, cfg, kind):
  """The extra query view of a base method, from its own per-sample keys:
  'extreme' (AimCLR) or 'normal' (RVTCLR's distribution-consistency view)."""

  def one(x, key):
    key = jax.random.fold_in(key, 2)
    if kind == 'extreme':
      return extreme(x, key, cfg)
    return augment(x, key, cfg, strong=False)

  return jax.vmap(one)(batch_x, keys)


def relative_tempo(x_q, x_k, keys, ratio=2):
  """RVTCLR's relative-tempo views of (N, M, T, V, 3) query/key clips.

  Each video plays at tempo 1 (its first T / ratio frames) or tempo ``ratio``
  (every ratio-th frame): query and key share the tempo, ``k_other`` is the
  key view at the other tempo. The release splits the batch exactly in half
  with ``randperm``; here a fair coin per video (keyed by its global index)
  decides, so the choice does not depend on the batch layout.
  """
  t = x_q.shape[2] // ratio
  fast = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, 3)))(
    keys
  )
  slow_idx, fast_idx = jnp.arange(t), ratio * jnp.arange(t)
  same = jnp.where(fast[:, None], fast_idx, slow_idx)
  other = jnp.where(fast[:, None], slow_idx, fast_idx)
  take = jax.vmap(lambda x, idx: x[:, idx])
  return take(x_q, same), take(x_k, same), take(x_k, other)


def relative_tempo_frames(f_q, f_k, keys, ratio=2):
  """``relative_tempo`` applied to frame maps (N, T): the maps of q, k and
  k_other (the same coin per video)."""
  expand = lambda f: f[:, None, :, None, None]  # as (N, M=1, T, V=1, C=1)
  q, k, k_other = relative_tempo(expand(f_q), expand(f_k), keys, ratio)
  return q[:, 0, :, 0, 0], k[:, 0, :, 0, 0], k_other[:, 0, :, 0, 0]
