"""ST-GCN partition and backbone against docs/data_and_eval.md §4.1-4.2.

Speed: the default-width model is only built abstractly (``nnx.eval_shape``);
models that run are filled with NumPy weights (library init is eager and
slow), and the full model runs through one jitted apply.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skel_jax import graph
from skel_jax.models import stgcn
from skel_jax.models.stgcn import STGCN
from skel_jax.models.stgcn import STGCNBlock

SKELETONCLR_CHANNELS = [16, 16, 16, 16, 32, 32, 32, 64, 64, 256]
STRIDE2_BLOCKS = {5, 8}  # 1-based
K, V = 3, 25
BONES_1BASED = (
  (1, 2),
  (2, 21),
  (3, 21),
  (4, 3),
  (5, 21),
  (6, 5),
  (7, 6),
  (8, 7),
  (9, 21),
  (10, 9),
  (11, 10),
  (12, 11),
  (13, 1),
  (14, 13),
  (15, 14),
  (16, 15),
  (17, 1),
  (18, 17),
  (19, 18),
  (20, 19),
  (22, 23),
  (23, 8),
  (24, 25),
  (25, 12),
)


def _entries(a):
  """Nonzero (input, receiver) pairs of one subset, 1-based."""
  return {(int(v) + 1, int(w) + 1) for v, w in zip(*np.nonzero(a))}


# ------------------------------------------------------------ graph ----


def _loop_reference(strategy, max_hop):
  """ST-GCN Graph (ntu-rgb+d, dilation 1), written out as plain loops."""
  inf = float('inf')
  nbr = {i: set() for i in range(V)}
  for a, b in BONES_1BASED:
    nbr[a - 1].add(b - 1)
    nbr[b - 1].add(a - 1)
  hop = [[inf] * V for _ in range(V)]
  for s in range(V):  # BFS truncated at max_hop
    hop[s][s], frontier = 0, {s}
    for d in range(1, max_hop + 1):
      frontier = {u for f in frontier for u in nbr[f] if hop[s][u] == inf}
      for u in frontier:
        hop[s][u] = d
  adj = np.array(
    [[1.0 if hop[i][j] <= max_hop else 0.0 for j in range(V)] for i in range(V)]
  )
  norm = adj / adj.sum(0)[None, :]
  if strategy == 'uniform':
    return norm[None]
  if strategy == 'distance':
    return np.stack(
      [np.where(np.array(hop) == h, norm, 0) for h in range(max_hop + 1)]
    )
  out, c = [], 20
  for h in range(max_hop + 1):
    root, close, far = (np.zeros((V, V)) for _ in range(3))
    for i in range(V):
      for j in range(V):
        if hop[j][i] == h:
          if hop[j][c] == hop[i][c]:
            root[j, i] = norm[j, i]
          elif hop[j][c] > hop[i][c]:
            close[j, i] = norm[j, i]
          else:
            far[j, i] = norm[j, i]
    out += [root] if h == 0 else [root + close, far]
  return np.stack(out)


@pytest.mark.parametrize(
  'strategy,max_hop',
  [
    ('uniform', 1),
    ('distance', 1),
    ('spatial', 1),
    ('spatial', 2),
    ('distance', 3),
  ],
)
def test_partition_matches_loop_reference(strategy, max_hop):
  got = graph.stgcn_partition(strategy, max_hop=max_hop)
  want = _loop_reference(strategy, max_hop)
  assert got.shape == want.shape and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
  assert not got.flags.writeable  # cached: callers must not mutate it


def test_spatial_artefact_counts_and_orientation():
  a = graph.stgcn_partition()
  assert a.shape == (K, V, V)
  assert [np.count_nonzero(s) for s in a] == [25, 40, 8]
  np.testing.assert_array_equal(a[0] != 0, np.eye(V, dtype=bool))
  # Row = input, column = receiver (§4.1 lists input -> receiver, 1-based).
  centripetal = {
    (1, 2),
    (2, 21),
    (3, 21),
    (4, 3),
    (5, 21),
    (6, 5),
    (9, 21),
    (10, 9),
  }
  centrifugal = {
    (2, 1),
    (3, 4),
    (5, 6),
    (9, 10),
    (21, 2),
    (21, 3),
    (21, 5),
    (21, 9),
  }
  assert _entries(a[2]) == centrifugal
  assert centripetal <= _entries(a[1])
  # The other 32 entries of A1: both endpoints >= 2 hops from joint 21.
  near = {2, 3, 5, 9, 21}
  far_far = _entries(a[1]) - centripetal
  assert len(far_far) == 32
  assert all(v not in near and w not in near for v, w in far_far)
  assert a[0, 0, 0] != 0 and a[1, 0, 1] != 0 and a[2, 20, 1] != 0


def test_column_normalisation():
  a = graph.stgcn_partition()
  np.testing.assert_allclose(a.sum((0, 1)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(
    a.sum(0), graph.stgcn_partition('uniform')[0], rtol=1e-6
  )
  # Joint 21 receives from itself and joints 2, 3, 5, 9: 1 / 5 each.
  col = a[:, :, 20].sum(0)
  np.testing.assert_allclose(col[[1, 2, 4, 8, 20]], 0.2, rtol=1e-6)
  assert np.count_nonzero(col) == 5
  # A hand tip (joint 22) has one bone: itself and joint 23, 1 / 2 each.
  np.testing.assert_allclose(a[:, [21, 22], 21].sum(0), 0.5, rtol=1e-6)


def test_corrected_partition_uses_true_centre_distances():
  art = graph.stgcn_partition(corrected=False)
  cor = graph.stgcn_partition(corrected=True)
  assert [np.count_nonzero(s) for s in cor] == [25, 24, 24]
  # Centripetal = child feeds parent for every bone; centrifugal the reverse.
  assert _entries(cor[1]) == set(BONES_1BASED)
  assert _entries(cor[2]) == {(b, a) for a, b in BONES_1BASED}
  # Same neighbourhood and weights, only regrouped.
  np.testing.assert_array_equal(cor[0], art[0])
  np.testing.assert_allclose(cor.sum(0), art.sum(0), rtol=1e-6)
  # The artefact moves the 16 far centrifugal entries into A1.
  moved = _entries(art[1]) - _entries(cor[1])
  assert len(moved) == 16 and moved == _entries(cor[2]) - _entries(art[2])
  # Other strategies do not use centre distances.
  for strategy in ('uniform', 'distance'):
    np.testing.assert_array_equal(
      graph.stgcn_partition(strategy, corrected=True),
      graph.stgcn_partition(strategy),
    )


def test_bad_strategy():
  with pytest.raises(ValueError):
    graph.stgcn_partition('bogus')


# ------------------------------------------------------------ model ----


def _abstract(make):
  return nnx.eval_shape(make)


def _size(tree):
  return sum(int(np.prod(l.shape)) for l in jax.tree.leaves(tree))


def _fill(abstract, seed=0):
  """Materialise an abstract module: He-normal kernels, random BN, ones E."""
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    name = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)][-1]
    if name == 'edge_importance':
      v = np.ones(leaf.shape)
    elif name in ('scale', 'var'):
      v = rng.uniform(0.5, 1.5, leaf.shape)
    elif name in ('bias', 'mean'):
      v = rng.normal(0.0, 0.1, leaf.shape)
    elif name == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      v = rng.normal(0.0, math.sqrt(2.0 / fan_in), leaf.shape)
    else:
      raise AssertionError(f'unexpected variable {jax.tree_util.keystr(path)}')
    return jnp.asarray(v, leaf.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(init, state))


def _block_params(block, cin, cout, stride, edge=True):
  """One st_gcn block, from the §4.2 table (temporal kernel 9, K = 3)."""
  n = cin * K * cout + K * cout  # gcn 1x1 conv to K * out, with bias
  n += 2 * cout  # tcn BN before ReLU
  n += 9 * cout * cout + cout  # tcn conv (9, 1)
  n += 2 * cout  # tcn BN after the conv
  n += K * V * V * edge  # edge importance
  if block > 1 and (cin != cout or stride != 1):
    n += cin * cout + cout + 2 * cout  # residual 1x1 conv + BN
  return n


def _model_params(channels, edge=True, cin=3):
  n = 2 * V * cin  # data_bn scale + bias over V * C
  for block, cout in enumerate(channels, start=1):
    stride = 2 if block in STRIDE2_BLOCKS else 1
    n += _block_params(block, cin, cout, stride, edge)
    cin = cout
  return n


@pytest.mark.parametrize('width', [1.0, 0.25, 0.01])
def test_channels_and_strides(width):
  model = _abstract(lambda: STGCN(width=width, rngs=nnx.Rngs(0)))
  want = [max(1, round(c * width)) for c in SKELETONCLR_CHANNELS]
  assert list(model.channels) == want
  assert model.out_channels == want[-1]
  assert [i for i, s in enumerate(model.strides, 1) if s == 2] == [5, 8]
  assert [b.dropout for b in model.blocks] == [0.0] + [0.5] * 9


def test_standard_widths_and_residual_kinds():
  std = _abstract(lambda: STGCN(hidden_channels=64, rngs=nnx.Rngs(0)))
  assert list(std.channels) == [64] * 4 + [128] * 3 + [256] * 3
  assert std.blocks[9].residual_kind == 'identity'  # standard ST-GCN
  clr = _abstract(lambda: STGCN(rngs=nnx.Rngs(0)))
  assert [b.residual_kind for b in clr.blocks] == [
    'none',
    'identity',
    'identity',
    'identity',
    'conv',
    'identity',
    'identity',
    'conv',
    'identity',
    'conv',
  ]  # block 10: 64 -> 256


def test_parameter_count_defaults():
  model = _abstract(lambda: STGCN(rngs=nnx.Rngs(0)))
  want = _model_params(SKELETONCLR_CHANNELS)
  assert want == 821_380
  assert _size(nnx.state(model, nnx.Param)) == want
  cin = 3
  for block, (mod, cout) in enumerate(
    zip(model.blocks, SKELETONCLR_CHANNELS), start=1
  ):
    stride = 2 if block in STRIDE2_BLOCKS else 1
    assert _size(nnx.state(mod, nnx.Param)) == _block_params(
      block, cin, cout, stride
    ), block
    cin = cout
  no_edge = _abstract(lambda: STGCN(edge_importance=False, rngs=nnx.Rngs(0)))
  assert _size(nnx.state(no_edge, nnx.Param)) == _model_params(
    SKELETONCLR_CHANNELS, edge=False
  )
  # Params + BatchStats are the whole state: no rng or raw-array leftovers.
  _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  assert _size(params) == want
  assert {p[-1] for p, _ in nnx.to_flat_state(stats)} == {'mean', 'var'}


def test_edge_importance_init_is_ones():
  # Library init of one block (eager init of all ten is slow); the others
  # are built by the same code, checked abstractly below.
  block = STGCNBlock(3, 4, num_subsets=K, rngs=nnx.Rngs(0))
  assert isinstance(block.edge_importance, nnx.Param)
  np.testing.assert_array_equal(
    block.edge_importance[...], np.ones((K, V, V), np.float32)
  )
  model = _abstract(lambda: STGCN(rngs=nnx.Rngs(0)))
  for b in model.blocks:
    assert isinstance(b.edge_importance, nnx.Param)
    assert b.edge_importance.shape == (K, V, V)
  off = _abstract(lambda: STGCN(edge_importance=False, rngs=nnx.Rngs(0)))
  assert all(b.edge_importance is None for b in off.blocks)


@pytest.mark.parametrize('t', [32, 30])
def test_output_shapes(t):
  model = _abstract(lambda: STGCN(rngs=nnx.Rngs(0)))
  x = jax.ShapeDtypeStruct((4, t, V, 3), jnp.float32)
  outs = nnx.eval_shape(lambda mod, x: mod(x, False), model, x)
  assert len(outs) == 10
  length = t
  for block, (out, c) in enumerate(zip(outs, SKELETONCLR_CHANNELS), start=1):
    if block in STRIDE2_BLOCKS:
      length = -(-length // 2)  # conv k9 pad 4 stride 2: ceil(T / 2)
    assert out.shape == (4, length, V, c), block
  assert [outs[4].shape[1], outs[9].shape[1]] == {32: [16, 8], 30: [15, 8]}[t]


def test_data_bn_channel_index_is_v_times_c_plus_c():
  model = _fill(_abstract(lambda: STGCN(width=0.01, rngs=nnx.Rngs(0))))
  bn = model.data_bn
  assert bn.scale.shape == (V * 3,)
  x = np.random.default_rng(0).normal(size=(2, 5, V, 3)).astype(np.float32)
  x += np.arange(V * 3, dtype=np.float32).reshape(V, 3)  # distinct means
  # Training statistics: channel v * 3 + c is x[..., v, c] over (B, T).
  bn.mean[...] = jnp.zeros(V * 3)
  model.normalize_input(jnp.asarray(x), train=True)
  np.testing.assert_allclose(
    np.asarray(bn.mean) / 0.1, x.mean((0, 1)).reshape(-1), rtol=1e-5
  )
  # Eval: bias b[v * 3 + c] lands on joint v, coordinate c.
  bn.scale[...] = jnp.zeros(V * 3)
  bn.bias[...] = jnp.arange(V * 3, dtype=jnp.float32)
  y = np.asarray(model.normalize_input(jnp.asarray(x), train=False))
  np.testing.assert_array_equal(y[1, 3], np.arange(V * 3).reshape(V, 3))


# --------------------------------------------------- block numerics ----


def _np_block(block, x, stride):
  """NumPy st_gcn block in eval mode, in torch layout (N, C, T, V)."""

  def bn(h, mod):  # h: (N, C, T, V)
    s, b, m, var = (
      np.asarray(getattr(mod, k))[None, :, None, None]
      for k in ('scale', 'bias', 'mean', 'var')
    )
    return s * (h - m) / np.sqrt(var + 1e-5) + b

  def tconv(h, conv, kernel):  # torch Conv2d(k, 1), stride (s, 1), pad k//2
    w = np.asarray(conv.kernel)[:, 0]  # (k, cin, cout)
    pad = kernel // 2
    hp = np.pad(h, ((0, 0), (0, 0), (pad, pad), (0, 0)))
    t_out = (h.shape[2] + 2 * pad - kernel) // stride + 1
    out = np.zeros((h.shape[0], w.shape[-1], t_out, V))
    for i in range(t_out):
      window = hp[:, :, i * stride : i * stride + kernel]  # (N, C, k, V)
      out[:, :, i] = np.einsum('nckv,kco->nov', window, w)
    return out + np.asarray(conv.bias)[None, :, None, None]

  xt = x.transpose(0, 3, 1, 2)  # (N, C, T, V)
  a = graph.stgcn_partition() * np.asarray(block.edge_importance)
  w = np.asarray(block.gcn.conv.kernel).T  # torch (K*out, in)
  y = np.einsum('oc,nctv->notv', w, xt)
  y += np.asarray(block.gcn.conv.bias)[None, :, None, None]
  n, kc, t, _ = y.shape
  y = y.reshape(n, K, kc // K, t, V)  # torch view
  y = np.einsum('nkctv,kvw->nctw', y, a)
  y = np.maximum(bn(y, block.tcn_bn), 0)
  y = bn(tconv(y, block.tcn.conv, 9), block.tcn.bn)
  res = bn(tconv(xt, block.residual.conv, 1), block.residual.bn)
  return np.maximum(y + res, 0).transpose(0, 2, 3, 1)  # back to (N, T, V, C)


def test_block_matches_torch_layout_reference():
  cin, cout, stride = 3, 8, 2
  block = _fill(
    _abstract(
      lambda: STGCNBlock(
        cin, cout, num_subsets=K, stride=stride, dropout=0.5, rngs=nnx.Rngs(0)
      )
    ),
    seed=1,
  )
  rng = np.random.default_rng(2)
  # Non-trivial edge importance so the elementwise product matters.
  block.edge_importance[...] = jnp.asarray(
    rng.uniform(0.5, 1.5, (K, V, V)), jnp.float32
  )
  x = rng.normal(size=(2, 7, V, cin)).astype(np.float32)
  adjacency = jnp.asarray(graph.stgcn_partition())
  got = np.asarray(
    block(jnp.asarray(x), adjacency, train=False, dropout_key=jax.random.key(0))
  )
  assert got.shape == (2, 4, V, cout)
  np.testing.assert_allclose(
    got, _np_block(block, x, stride), rtol=1e-4, atol=1e-4
  )


def test_dropout_only_with_key_and_train():
  block = _fill(
    _abstract(
      lambda: STGCNBlock(8, 8, num_subsets=K, dropout=0.5, rngs=nnx.Rngs(0))
    )
  )
  x = jnp.asarray(
    np.random.default_rng(0).normal(size=(2, 6, V, 8)), jnp.float32
  )
  adjacency = jnp.asarray(graph.stgcn_partition())
  k0, k1 = jax.random.key(0), jax.random.key(1)
  run = functools.partial(block, x, adjacency)
  # Eval ignores the key; train without a key is deterministic.
  np.testing.assert_array_equal(run(False, k0), run(False))
  no_drop = run(True)
  np.testing.assert_array_equal(run(True), no_drop)
  with_key = run(True, k0)
  assert not np.allclose(with_key, no_drop)
  np.testing.assert_array_equal(run(True, k0), with_key)
  assert not np.allclose(run(True, k1), with_key)
  # Rate 0 (block 1) never drops.
  block.dropout = 0.0
  np.testing.assert_array_equal(run(True, k0), no_drop)


def test_inverted_dropout_statistics():
  x = jnp.ones((200, 100))
  y = np.asarray(stgcn._dropout(x, 0.5, jax.random.key(0)))
  assert set(np.unique(y)) == {0.0, 2.0}
  assert abs((y == 0).mean() - 0.5) < 0.02


# ------------------------------------------------------- full model ----


@functools.partial(jax.jit, static_argnums=(0, 4))
def _apply(graphdef, params, stats, x, train, key):
  model = nnx.merge(graphdef, params, stats)
  outs = model(x, train, key)
  return outs, nnx.state(model, nnx.BatchStat)


def test_full_model_batch_stats_and_dropout():
  model = _fill(_abstract(lambda: STGCN(width=0.25, rngs=nnx.Rngs(0))))
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  x = jnp.asarray(
    np.random.default_rng(0).normal(size=(4, 16, V, 3)), jnp.float32
  )
  outs, stats_eval = _apply(graphdef, params, stats, x, False, None)
  assert [o.shape[1:] for o in outs][-1] == (4, V, 64)
  assert all(np.isfinite(np.asarray(o)).all() for o in outs)
  for s0, s1 in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_eval)):
    np.testing.assert_array_equal(s0, s1)
  key = jax.random.key(3)
  train_a, stats_a = _apply(graphdef, params, stats, x, True, key)
  train_b, _ = _apply(graphdef, params, stats, x, True, jax.random.key(4))
  # Every BN (data_bn included) moved its statistics in training mode.
  for s0, s1 in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_a)):
    assert not np.allclose(s0, s1)
  # Block 1 has rate 0; later blocks drop with the key.
  np.testing.assert_array_equal(train_a[0], train_b[0])
  assert not np.allclose(train_a[-1], train_b[-1])
