"""ST-GCN backbone as in SkeletonCLR / AimCLR (docs/data_and_eval.md §4).

Layout is channels-last throughout: features are (batch, time, joints,
channels). Persons are folded into the batch by the caller (B = N * M).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from skel_jax import graph
from skel_jax.models import layers
from skel_jax.models.agcn import TemporalConv
from skel_jax.models.agcn import add_residual
from skel_jax.models.agcn import make_residual

# Block widths in units of ``hidden_channels``; block 10 uses ``hidden_dim``.
STGCN_WIDTH_MULTIPLIERS = (1, 1, 1, 1, 2, 2, 2, 4, 4)
STGCN_STRIDES = (1, 1, 1, 1, 2, 1, 1, 2, 1, 1)  # blocks 5 and 8 halve time
TEMPORAL_KERNEL = 9


def _dropout(x, rate, key):
  """Inverted dropout (torch ``nn.Dropout``) without any module rng state."""
  keep = 1.0 - rate
  # A flat draw reshaped: with partitionable threefry, XLA:CPU takes ~1 s to
  # compile each multi-dimensional draw but ~0.1 s for a 1-D one.
  mask = jax.random.bernoulli(key, keep, (x.size,)).reshape(x.shape)
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


class GraphConv(nnx.Module):
  """ConvTemporalGraphical (temporal kernel 1) with the K subsets fused.

  One dense layer produces all K * cout channels (channel index k * cout + c,
  as torch's ``view(n, K, c, t, v)``), then a single einsum sums over subsets
  and input joints: ``out[w] = sum_k sum_v y_k[v] * A[k, v, w]``.
  """

  def __init__(self, cin, cout, *, num_subsets, rngs):
    self.num_subsets = num_subsets
    self.conv = layers.dense(cin, num_subsets * cout, rngs)

  def __call__(self, x, adjacency):
    n, t, v, _ = x.shape
    y = self.conv(x).reshape(n, t, v, self.num_subsets, -1)
    return jnp.einsum('ntvkc,kvw->ntwc', y, adjacency.astype(y.dtype))


class STGCNBlock(nnx.Module):
  """st_gcn block: relu(dropout(tcn(gcn(x))) + residual(x)).

  tcn = BN -> ReLU -> conv (9, 1) stride s -> BN; the residual is none (block
  1), identity (same width and stride 1) or 1x1 conv stride s + BN.
  """

  def __init__(
    self,
    cin,
    cout,
    *,
    num_subsets,
    stride=1,
    dropout=0.0,
    residual=True,
    edge_importance=True,
    rngs,
  ):
    self.gcn = GraphConv(cin, cout, num_subsets=num_subsets, rngs=rngs)
    self.tcn_bn = layers.batch_norm(cout, rngs)
    self.tcn = TemporalConv(
      cout, cout, kernel=TEMPORAL_KERNEL, stride=stride, rngs=rngs
    )
    self.dropout = float(dropout)
    num_joints = graph.NUM_JOINTS
    if edge_importance:
      # Multiplies the fixed partition; ones == plain ST-GCN at init.
      self.edge_importance = nnx.Param(
        jnp.ones((num_subsets, num_joints, num_joints), jnp.float32)
      )
    else:
      self.edge_importance = None
    self.residual_kind, self.residual = make_residual(
      cin, cout, stride, residual, rngs
    )

  def __call__(self, x, adjacency, train, dropout_key=None):
    if self.edge_importance is not None:
      adjacency = adjacency * self.edge_importance[...]
    y = self.gcn(x, adjacency)
    y = jax.nn.relu(self.tcn_bn(y, use_running_average=not train))
    y = self.tcn(y, train)
    if train and dropout_key is not None and self.dropout > 0:
      y = _dropout(y, self.dropout, dropout_key)
    return jax.nn.relu(
      add_residual(y, x, self.residual_kind, self.residual, train)
    )


class STGCN(nnx.Module):
  """10-block ST-GCN; returns the outputs of every block (taps chosen later).

  Defaults are SkeletonCLR/AimCLR's 1/4-width model: channels 16, 16, 16, 16,
  32, 32, 32, 64, 64, 256, strides 2 at blocks 5 and 8, dropout 0.5 in
  blocks 2-10 (0 in block 1), edge-importance weighting and the 'spatial'
  partition (with the reference's max_hop = 1 artefact unless
  ``corrected_partition``; see ``graph.stgcn_partition``). ``width``
  multiplies every channel count (min 1).

  Input normalisation ``data_bn`` is a BatchNorm over V * C channels with
  index v * C + c, statistics over (N * M, T): the SkeletonCLR / ST-GCN form
  (``view(N * M, V * C, T)``), not 2s-AGCN's M * V * C variant. Statistics
  are therefore shared by all persons and ``num_persons`` does not change
  any shape; it is accepted for config symmetry only.

  The module holds no rng state: dropout draws from ``dropout_key`` passed
  to ``__call__``, so ``nnx.split(model, nnx.Param, nnx.BatchStat)`` covers
  all of its state.
  """

  def __init__(
    self,
    *,
    in_channels=3,
    width=1.0,
    hidden_channels=16,
    hidden_dim=256,
    dropout=0.5,
    num_persons=2,
    corrected_partition=False,
    edge_importance=True,
    rngs,
  ):
    base = [m * hidden_channels for m in STGCN_WIDTH_MULTIPLIERS]
    self.channels = tuple(layers.scaled(c, width) for c in base + [hidden_dim])
    self.strides = STGCN_STRIDES
    self.num_persons = num_persons
    self.corrected_partition = bool(corrected_partition)
    num_subsets = self._partition().shape[0]
    self.data_bn = layers.batch_norm(graph.NUM_JOINTS * in_channels, rngs)
    blocks = []
    cin = in_channels
    for i, (cout, stride) in enumerate(zip(self.channels, self.strides)):
      blocks.append(
        STGCNBlock(
          cin,
          cout,
          num_subsets=num_subsets,
          stride=stride,
          dropout=dropout if i > 0 else 0.0,
          residual=i > 0,
          edge_importance=edge_importance,
          rngs=rngs,
        )
      )
      cin = cout
    self.blocks = nnx.List(blocks) if hasattr(nnx, 'List') else blocks
    self.out_channels = cin

  def _partition(self):
    # Fetched on use (cached NumPy), so the module stores no raw arrays.
    return graph.stgcn_partition(
      'spatial', max_hop=1, corrected=self.corrected_partition
    )

  def normalize_input(self, x, train):
    """data_bn on (B, T, V, C): channel v * C + c is x[..., v, c]."""
    b, t, v, c = x.shape
    y = self.data_bn(x.reshape(b, t, v * c), use_running_average=not train)
    return y.reshape(b, t, v, c)

  def __call__(self, x, train, dropout_key=None):
    """x: (B, T, 25, C_in) -> tuple of 10 block outputs (B, T_i, 25, C_i).

    Dropout runs only when ``train`` and ``dropout_key`` is given; each block
    uses ``fold_in(dropout_key, block_index)``.
    """
    x = self.normalize_input(x, train)
    adjacency = jnp.asarray(self._partition(), x.dtype)
    feats = []
    for i, block in enumerate(self.blocks):
      key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
      x = block(x, adjacency, train, key)
      feats.append(x)
    return tuple(feats)
