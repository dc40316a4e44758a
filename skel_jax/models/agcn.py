"""Adaptive graph convolutional network (2s-AGCN) as used by the released SnipCLR code.

Layout is channels-last throughout: features are (batch, time, joints, channels).
Persons are folded into the batch by the caller.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from skel_jax import graph
from skel_jax.models import layers

AGCN_CHANNELS = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256)
AGCN_STRIDES = (1, 2, 1, 1, 2, 1, 1, 2, 1, 1)  # units 2, 5, 8 halve time


# Up to this many input channels (the first unit's 3 coordinates; the first
# units of the narrow CPU models) the plain einsum is faster: its transposes
# are small, and the adjacency broadcast over time would be 9-25x larger
# than x.
EINSUM_MAX_CHANNELS = 8


def aggregate(x, adj):
  """out[n, t, w, k, c] = sum over v of x[n, t, v, c] adj[n, k, v, w].

  As one einsum, XLA's CPU backend moves the joints axis of x (and of the
  3x larger output) to the end with full-size transposes in the forward and
  backward passes. Broadcasting the small (n, k, v, w) adjacency over time
  instead makes it a matmul batched over (n, t) on x's own layout (README,
  "Speed": the graph conv's forward + backward at 16 x 300 frames x 64
  channels, 2-core CPU, 0.58 s -> 0.49 s). At 3 and 8 input channels the
  einsum wins (forward + backward at 16 x 320 frames: 24 vs 53 ms, 52 vs
  60 ms; the width-0.125 finetune step 8 x 2 x 320: 0.47-0.50 s vs
  0.51-0.57 s); from 16 channels up the batched matmul does (33 vs 52 ms,
  and 207 vs 358 ms at 64).
  """
  if x.shape[-1] <= EINSUM_MAX_CHANNELS:
    return jnp.einsum('ntvc,nkvw->ntwkc', x, adj)
  n, t, v, _ = x.shape
  k, w = adj.shape[1], adj.shape[3]
  adj_t = jnp.broadcast_to(
    adj.transpose(0, 3, 1, 2).reshape(n, 1, w * k, v), (n, t, w * k, v)
  )
  out = jax.lax.dot_general(adj_t, x, (((3,), (2,)), ((0, 1), (0, 1))))
  return out.reshape(n, t, w, k, x.shape[-1])


def _embed_joints_last(x, dense, num_subsets):
  """``dense(x)`` (N, T, V, K * I) laid out as (N, K, I * T, V): the matmul
  W^T x^T batched over N writes this layout itself (XLA:CPU copies x to
  (N, C, T * V) for it, once for both embeddings)."""
  n, t, v, _ = x.shape
  kernel, bias = dense.kernel[...], dense.bias[...]
  x, kernel, bias = dense.promote_dtype((x, kernel, bias), dtype=dense.dtype)
  kernel_n = jnp.broadcast_to(kernel.T[None], (n,) + kernel.T.shape)
  e = jax.lax.dot_general(kernel_n, x, (((2,), (3,)), ((0,), (0,))))
  return (e + bias[None, :, None, None]).reshape(n, num_subsets, -1, v)


def joint_affinity(x, embed_a, embed_b, num_subsets):
  """(N, K, V, W): sum over (t, i) of a[n, t, v, k, i] b[n, t, w, k, i] for
  the embeddings a = embed_a(x), b = embed_b(x) split into K subsets.

  The reference permutes both embeddings to (N, V, I * T) before its matmul,
  and XLA:CPU does the same for the einsum: two copies of 3/4 of x's size
  forward, more backward. With the embeddings written joints-last (every
  (n, k) block a contiguous (I * T, V) matrix) the contraction is a plain
  batched matmul (README, "Speed": together with the BatchNorm backward of
  ``layers``, the finetune step's layout copies 542 -> 304 ms of op time,
  the step 3-6% faster).
  """
  # Transposed by the embedding matmuls: computed first, or XLA:CPU fuses
  # the BatchNorm, ReLU and residual add producing x into that copy.
  (x,) = layers.materialize(x)
  a = _embed_joints_last(x, embed_a, num_subsets)
  b = _embed_joints_last(x, embed_b, num_subsets)
  return jax.lax.dot_general(a, b, (((2,), (2,)), ((0, 1), (0, 1))))


class AdaptiveGraphConv(nnx.Module):
  """unit_gcn: (fixed A + learnable PA + data-dependent attention) over 3 subsets.

  The reference applies one 1x1 conv ``conv_d[k]`` per subset and sums them; we
  apply a single dense layer to the concatenation of the 3 aggregated inputs,
  which is the same linear map (its 3 biases collapse into one).
  """

  def __init__(self, cin, cout, *, embed_ratio=4, rngs):
    adjacency = graph.agcn_spatial_partition()
    self.num_subsets = adjacency.shape[0]
    self.inter = max(cout // embed_ratio, 1)
    k = self.num_subsets
    # PA is initialised to 1e-6 (released code), added to the fixed partition.
    self.pa = nnx.Param(jnp.full(adjacency.shape, 1e-6, jnp.float32))
    self.embed_a = layers.dense(cin, k * self.inter, rngs)
    self.embed_b = layers.dense(cin, k * self.inter, rngs)
    self.project = layers.dense(k * cin, cout, rngs)
    self.bn = layers.batch_norm(cout, rngs)
    if cin != cout:
      self.down = layers.dense(cin, cout, rngs)
      self.down_bn = layers.batch_norm(cout, rngs)
    else:
      self.down = None

  def __call__(self, x, train):
    n, t, v, c = x.shape
    k, inter = self.num_subsets, self.inter
    # Attention over source joints v for every receiving joint w.
    att = joint_affinity(x, self.embed_a, self.embed_b, k) / (inter * t)
    att = jax.nn.softmax(att, axis=-2)
    adjacency = jnp.asarray(graph.agcn_spatial_partition(), x.dtype)
    adj = att + (adjacency + self.pa[...].astype(x.dtype))[None]
    agg = aggregate(x, adj).reshape(n, t, v, k * c)
    y = self.bn(self.project(agg), use_running_average=not train)
    res = (
      x
      if self.down is None
      else self.down_bn(self.down(x), use_running_average=not train)
    )
    return jax.nn.relu(y + res)


class TemporalConv(nnx.Module):
  """unit_tcn: conv over time (kernel k, stride s) followed by BN."""

  def __init__(self, cin, cout, *, kernel=9, stride=1, rngs):
    self.conv = layers.TimeConv(
      cin, cout, kernel, stride=stride, joints=True, rngs=rngs
    )
    self.bn = layers.batch_norm(cout, rngs)

  def __call__(self, x, train):
    return self.bn(self.conv(x), use_running_average=not train)


def make_residual(cin, cout, stride, enabled, rngs):
  """(kind, module) of a unit's residual branch, shared by AGCN and ST-GCN:
  'none' (disabled), 'identity' (same shape) or a strided 1x1 conv + BN."""
  if not enabled:
    return 'none', None
  if cin == cout and stride == 1:
    return 'identity', None
  return 'conv', TemporalConv(cin, cout, kernel=1, stride=stride, rngs=rngs)


def add_residual(y, x, kind, module, train):
  if kind == 'identity':
    return y + x
  if kind == 'conv':
    return y + module(x, train)
  return y


class AGCNUnit(nnx.Module):
  """TCN_GCN_unit: relu(tcn(gcn(x)) + residual(x))."""

  def __init__(self, cin, cout, *, stride=1, residual=True, rngs):
    self.gcn = AdaptiveGraphConv(cin, cout, rngs=rngs)
    self.tcn = TemporalConv(cout, cout, stride=stride, rngs=rngs)
    self.residual_kind, self.residual = make_residual(
      cin, cout, stride, residual, rngs
    )

  def __call__(self, x, train):
    y = self.tcn(self.gcn(x, train), train)
    return jax.nn.relu(
      add_residual(y, x, self.residual_kind, self.residual, train)
    )


class AGCN(nnx.Module):
  """10-unit AGCN; returns the outputs of every unit (the taps are chosen later).

  No input BatchNorm (the released code drops ``data_bn``). Unit 1 has no
  residual. ``width`` multiplies every channel count (1.0 = the paper's model).
  """

  def __init__(self, *, in_channels=3, width=1.0, rngs):
    self.channels = tuple(layers.scaled(c, width) for c in AGCN_CHANNELS)
    self.strides = AGCN_STRIDES
    units = []
    cin = in_channels
    for i, (cout, stride) in enumerate(zip(self.channels, self.strides)):
      units.append(
        AGCNUnit(cin, cout, stride=stride, residual=i > 0, rngs=rngs)
      )
      cin = cout
    self.units = nnx.List(units) if hasattr(nnx, 'List') else units
    self.out_channels = cin

  def __call__(self, x, train, dropout_key=None):
    """x: (B, T, 25, C_in) -> tuple of 10 unit outputs (B, T_i, 25, C_i).

    AGCN has no dropout; ``dropout_key`` keeps the backbone interface uniform.
    """
    del dropout_key
    feats = []
    for unit in self.units:
      x = unit(x, train)
      feats.append(x)
    return tuple(feats)
