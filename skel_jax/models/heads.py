"""Heads: global MoCo projection, dense snippet projection, U-shaped fusion, baseline.

All heads take joint-averaged features (N, T_i, C_i) (channels-last).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from skel_jax.models import layers


def l2_normalize(x, axis=-1, eps=1e-12):
  return x * jax.lax.rsqrt(
    jnp.maximum(jnp.sum(x * x, axis, keepdims=True), eps * eps)
  )


@functools.lru_cache(maxsize=None)
def adaptive_pool_matrix(length, bins):
  """(bins, length) averaging matrix with PyTorch ``adaptive_avg_pool1d`` bins.

  Bin i averages [floor(i L / S), ceil((i + 1) L / S)): non-overlapping when S
  divides L, and it repeats frames when S > L (validation forbids that case).
  """
  m = np.zeros((bins, length), np.float32)
  for i in range(bins):
    start = (i * length) // bins
    end = -((-(i + 1) * length) // bins)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x, bins):
  """(N, L, C) -> (N, bins, C) as a single matmul (no gathers in the hot path)."""
  m = jnp.asarray(adaptive_pool_matrix(x.shape[1], bins), x.dtype)
  return jnp.einsum('sl,nlc->nsc', m, x)


@functools.lru_cache(maxsize=None)
def _nearest_index(src_len, dst_len):
  # PyTorch's float32 rule: scale = float32(src) / float32(dst), source index
  # min(floor(float32(i) * scale), src - 1). It can land one below the exact
  # floor(i * src / dst) (T = 198: frame 99 reads step 24 of the 50-step
  # unit-7 tap, not 25). We used the exact integer rule before; the release's
  # rule is followed so that weights ported from it give the same outputs.
  scale = np.float32(src_len) / np.float32(dst_len)
  pos = np.arange(dst_len, dtype=np.float32) * scale
  return np.minimum(np.floor(pos), src_len - 1).astype(np.int32)


def upsample_nearest(x, length):
  """PyTorch ``interpolate(mode='nearest')`` along time: (N, L, C) -> (N, length, C)."""
  if x.shape[1] == length:
    return x
  return jnp.take(x, jnp.asarray(_nearest_index(x.shape[1], length)), axis=1)


def _projection(fc1, bn, fc2, x, train):
  """fc1 (-> BN) -> ReLU -> fc2 -> L2 normalise; fc1 None = fc2 alone."""
  if fc1 is not None:
    x = fc1(x)
    if bn is not None:
      x = bn(x, use_running_average=not train)
    x = jax.nn.relu(x)
  return l2_normalize(fc2(x))


class GlobalHead(nnx.Module):
  """SkeletonCLR MLP head on the clip-level average: C -> C -> dim, L2-normalised.

  ``mlp=False`` is a single linear layer (RVTCLR's ``fc1``/``fc2`` heads).
  ``batch_norm=True`` adds BatchNorm after the hidden layer (SimCLR / MoCo v3
  heads; statistics over the global batch): the released heads have none.
  """

  def __init__(self, cin, dim, *, mlp=True, batch_norm=False, rngs):
    self.fc1 = layers.dense(cin, cin, rngs) if mlp else None
    self.bn = layers.batch_norm(cin, rngs) if mlp and batch_norm else None
    self.fc2 = layers.dense(cin, dim, rngs)

  def __call__(self, feats, train=True):
    """feats: (N, T', C) joint-averaged backbone output."""
    return _projection(
      self.fc1, self.bn, self.fc2, jnp.mean(feats, axis=1), train
    )


def energy_attention_drop(feats, keep_prob=0.7, e_lambda=1e-4):
  """AimCLR's EADM (``Simam_Drop``) on backbone features (B, T, V, C).

  A parameter-free SimAM energy attention scores every element; joints whose
  mean attention reaches ``keep_prob`` are dropped, then every element whose
  attention does; survivors are rescaled by numel / kept, counted over the
  whole (global) batch as the release does. The masks carry no gradient (the
  release overwrites them in place).
  """
  b, t, v, _ = feats.shape
  x = jax.lax.stop_gradient(feats).astype(jnp.float32)
  dev = (x - jnp.mean(x, axis=(1, 2), keepdims=True)) ** 2
  var = jnp.sum(dev, axis=(1, 2), keepdims=True) / (t * v - 1)
  att = jax.nn.sigmoid(dev / (4 * (var + e_lambda)) + 0.5)

  def mask_and_scale(keep):  # counts in float32 (exact under bf16 compute)
    keep = keep.astype(jnp.float32)
    scale = keep.size / jnp.maximum(jnp.sum(keep), 1.0)
    return (keep * scale).astype(feats.dtype)

  out = (
    feats
    * mask_and_scale(jnp.mean(att, axis=(1, 3)) < keep_prob)[:, None, :, None]
  )
  return out * mask_and_scale(att < keep_prob)


# RVTCLR body parts (0-based NTU joints): torso, left leg, right leg, left arm,
# right arm.
BODY_PARTS = (
  (0, 1, 2, 3, 20),
  (16, 17, 18, 19),
  (12, 13, 14, 15),
  (8, 9, 10, 11, 23, 24),
  (4, 5, 6, 7, 21, 22),
)


@functools.lru_cache(maxsize=None)
def _part_pool_matrix(num_joints=25):
  m = np.zeros((num_joints, len(BODY_PARTS)), np.float32)
  for p, joints in enumerate(BODY_PARTS):
    m[list(joints), p] = 1.0 / len(joints)
  return m


class PartRelationBranch(nnx.Module):
  """RVTCLR's distribution-consistency branch (``IntraPart`` + ``InterPart``).

  IntraPart: average joints into 5 body parts, then a bias-free bottleneck
  (C -> C/2, ReLU, -> C). InterPart: a temporal non-local block whose T x T
  attention comes from the part-averaged features and is applied to every
  part, residual through a linear + BN. Output (B, T, 5, C). The release
  re-initialises every BN scale to N(1, 0.02) (``weights_init`` runs after
  construction), so the residual BN here is not zero-initialised either.
  """

  def __init__(self, channels, *, rngs):
    half = max(channels // 2, 1)
    self.squeeze = layers.dense(channels, half, rngs, use_bias=False)
    self.excite = layers.dense(half, channels, rngs, use_bias=False)
    self.g = layers.dense(channels, half, rngs)
    self.theta = layers.dense(channels, half, rngs)
    self.phi = layers.dense(channels, half, rngs)
    self.out = layers.dense(half, channels, rngs)
    self.out_bn = layers.batch_norm(channels, rngs)

  def __call__(self, feats, train):
    parts = jnp.einsum(
      'btvc,vp->btpc',
      feats,
      jnp.asarray(_part_pool_matrix(feats.shape[2]), feats.dtype),
    )
    x = self.excite(jax.nn.relu(self.squeeze(parts)))
    mean = jnp.mean(x, axis=2)
    att = jax.nn.softmax(
      jnp.einsum('btc,bsc->bts', self.theta(mean), self.phi(mean)), axis=-1
    )
    y = jnp.einsum('bts,bspc->btpc', att, self.g(x))
    return self.out_bn(self.out(y), use_running_average=not train) + x


class SnippetHead(nnx.Module):
  """Dense head: adaptive pool to S snippets -> 1x1 conv, ReLU, 1x1 conv -> L2 norm.

  Returns the raw pooled snippet features too: the correspondence between the
  two views is computed on them (before the head), as in the paper.
  """

  def __init__(self, cin, dim, num_snippets, *, batch_norm=False, rngs):
    self.num_snippets = num_snippets
    self.fc1 = layers.dense(cin, cin, rngs)
    self.bn = layers.batch_norm(cin, rngs) if batch_norm else None
    self.fc2 = layers.dense(cin, dim, rngs)

  def __call__(self, feats, train=True):
    pooled = adaptive_avg_pool(feats, self.num_snippets)
    return pooled, _projection(self.fc1, self.bn, self.fc2, pooled, train)


class ConvUnit(nnx.Module):
  """conv k3 pad 1 (c -> c), BN, ReLU over time."""

  def __init__(self, channels, *, rngs):
    self.conv = layers.TimeConv(channels, channels, 3, rngs=rngs)
    self.bn = layers.batch_norm(channels, rngs)

  def __call__(self, x, train):
    return jax.nn.relu(self.bn(self.conv(x), use_running_average=not train))


class UFusionHead(nnx.Module):
  """The paper's U-shaped (UNet++-style) multiscale fusion + per-frame classifier.

  Inputs: three taps x0 (T, c0), x1 (T/4, c1), x2 (T/8, c2). docs/method.md §4:
    x0_1 = CU(c0+c1)(cat[x0, up(x1)])
    x1_1 = CU(c1+c2)(cat[x1, up(x2)])
    x0_2 = CU(c0+(c0+c1)+(c1+c2))(cat[x0, x0_1, up(x1_1)])
    out  = conv k1 (cat[x0, x0_1, x0_2]) -> head_dim; linear -> K + 1.
  As in the reference, no non-linearity separates the k1 conv and the classifier.
  """

  def __init__(self, tap_channels, head_dim, num_outputs, *, rngs):
    c0, c1, c2 = tap_channels
    self.cu01 = ConvUnit(c0 + c1, rngs=rngs)
    self.cu11 = ConvUnit(c1 + c2, rngs=rngs)
    c02 = c0 + (c0 + c1) + (c1 + c2)
    self.cu02 = ConvUnit(c02, rngs=rngs)
    self.fuse = layers.TimeConv(c0 + (c0 + c1) + c02, head_dim, 1, rngs=rngs)
    self.classifier = layers.dense(head_dim, num_outputs, rngs)

  def features(self, taps, train):
    """Fused per-frame features (N, T, head_dim) (used by the KNN/linear probes)."""
    x0, x1, x2 = taps
    t0, t1 = x0.shape[1], x1.shape[1]
    x01 = self.cu01(jnp.concatenate([x0, upsample_nearest(x1, t0)], -1), train)
    x11 = self.cu11(jnp.concatenate([x1, upsample_nearest(x2, t1)], -1), train)
    x02 = self.cu02(
      jnp.concatenate([x0, x01, upsample_nearest(x11, t0)], -1), train
    )
    return self.fuse(jnp.concatenate([x0, x01, x02], -1))

  def __call__(self, taps, train, length=None):
    del length  # output is already at the resolution of the first tap
    return self.classifier(self.features(taps, train))


class UpsampleHead(nnx.Module):
  """Baseline without fusion: last-unit features, per-step linear, linear resize to T."""

  def __init__(self, tap_channels, head_dim, num_outputs, *, rngs):
    del head_dim
    self.classifier = layers.dense(tap_channels[-1], num_outputs, rngs)

  def features(self, taps, train):
    del train
    return taps[-1]

  def __call__(self, taps, train, length=None):
    logits = self.classifier(taps[-1])
    n, _, k = logits.shape
    length = length or taps[0].shape[1]
    # jax.image 'linear' uses half-pixel centres == PyTorch align_corners=False.
    return jax.image.resize(logits, (n, length, k), method='linear')
