"""AGCN backbone, heads and full models against docs/method.md §2-4.

Speed: big models are only built abstractly (``nnx.eval_shape``, no compute).
Models that must run are width 0.125 and filled with NumPy weights (library
init is eager and slow); all of them fold to the same backbone input shape
(4, 32, 25, 3) so the eager op cache is shared across tests.
"""

import fractions
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skel_jax import graph
from skel_jax import train_utils
from skel_jax.config_defaults import model_config
from skel_jax.models import AGCN
from skel_jax.models import Localizer
from skel_jax.models import MoCoEncoder
from skel_jax.models import UFusionHead
from skel_jax.models import UpsampleHead
from skel_jax.models import agcn
from skel_jax.models import heads
from skel_jax.models import layers

PAPER_CHANNELS = [64, 64, 64, 64, 128, 128, 128, 256, 256, 256]
STRIDE2_UNITS = {2, 5, 8}  # 1-based
K = 3  # adjacency subsets
T_RUN = 32


def _abstract(make):
  return nnx.eval_shape(make)


def _size(tree):
  return sum(int(np.prod(l.shape)) for l in jax.tree.leaves(tree))


def _ceil_half(t):
  return -(-t // 2)


def _fill(abstract, seed=0):
  """Materialise an abstract module with He-normal kernels and neutral BN."""
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    name = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)][-1]
    if name in ('scale', 'var'):
      v = np.ones(leaf.shape)
    elif name in ('bias', 'mean'):
      v = np.zeros(leaf.shape)
    elif name == 'pa':
      v = np.full(leaf.shape, 1e-6)
    elif name == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      v = rng.normal(0.0, math.sqrt(2.0 / fan_in), leaf.shape)
    else:
      raise AssertionError(f'unexpected variable {jax.tree_util.keystr(path)}')
    return jnp.asarray(v, leaf.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(init, state))


def _skeletons(n, m, t=T_RUN, seed=0):
  return (
    np.random.default_rng(seed).normal(size=(n, m, t, 25, 3)).astype(np.float32)
  )


# ------------------------------------------------------------- AGCN ----


@pytest.mark.parametrize('width', [1.0, 0.125, 0.01])
def test_agcn_channels(width):
  model = _abstract(lambda: AGCN(width=width, rngs=nnx.Rngs(0)))
  want = [max(1, round(c * width)) for c in PAPER_CHANNELS]
  assert list(model.channels) == want
  assert model.out_channels == want[-1]


@pytest.mark.parametrize('width', [1.0, 0.125])
@pytest.mark.parametrize('t', [32, 30])
def test_agcn_unit_output_shapes(width, t):
  model = _abstract(lambda: AGCN(width=width, rngs=nnx.Rngs(0)))
  x = jax.ShapeDtypeStruct((2, t, 25, 3), jnp.float32)
  outs = nnx.eval_shape(lambda mod, x: mod(x, False), model, x)
  assert len(outs) == 10
  length = t
  for unit, (out, c) in enumerate(zip(outs, PAPER_CHANNELS), start=1):
    if unit in STRIDE2_UNITS:
      length = _ceil_half(length)
    assert out.shape == (2, length, 25, max(1, round(c * width))), unit
  # e.g. 30 -> 15 -> 8 -> 4, 32 -> 16 -> 8 -> 4.
  assert outs[-1].shape[1] == {32: 4, 30: 4}[t]
  assert outs[4].shape[1] == {32: 8, 30: 8}[t]


def _unit_params(unit, cin, cout, stride):
  """Parameter count of one AGCN unit per docs/method.md §2 (conv_d fused)."""
  inter = cout // 4
  n = K * 25 * 25  # PA
  n += 2 * (cin * K * inter + K * inter)  # embed_a, embed_b
  n += K * cin * cout + cout  # fused conv_d
  n += 2 * cout  # gcn BN
  if cin != cout:
    n += cin * cout + cout + 2 * cout  # down conv + BN
  n += 9 * cout * cout + cout + 2 * cout  # tcn conv + BN
  if unit > 1 and (cin != cout or stride == 2):
    n += cin * cout + cout + 2 * cout  # residual 1x1 conv + BN
  return n


def _bn_channels():
  """Channels of every BatchNorm at width 1 (each holds mean + var)."""
  total, cin = 0, 3
  for unit, cout in enumerate(PAPER_CHANNELS, start=1):
    stride = 2 if unit in STRIDE2_UNITS else 1
    total += cout * 2  # gcn.bn, tcn.bn
    total += cout * (cin != cout)  # down_bn
    total += cout * (unit > 1 and (cin != cout or stride == 2))
    cin = cout
  return total


def test_agcn_parameter_count_width1():
  model = _abstract(lambda: AGCN(width=1.0, rngs=nnx.Rngs(0)))
  want, cin = 0, 3
  for unit, cout in enumerate(PAPER_CHANNELS, start=1):
    want += _unit_params(unit, cin, cout, 2 if unit in STRIDE2_UNITS else 1)
    cin = cout
  assert _size(nnx.state(model, nnx.Param)) == want
  # Per unit too, so a miscount points at the unit.
  cin = 3
  for unit, (mod, cout) in enumerate(zip(model.units, PAPER_CHANNELS), 1):
    stride = 2 if unit in STRIDE2_UNITS else 1
    assert _size(nnx.state(mod, nnx.Param)) == _unit_params(
      unit, cin, cout, stride
    ), unit
    cin = cout


def test_agcn_bn_statistics_are_batchstats_not_params():
  model = _abstract(lambda: AGCN(width=1.0, rngs=nnx.Rngs(0)))
  stats = nnx.state(model, nnx.BatchStat)
  assert _size(stats) == 2 * _bn_channels()
  param_paths = {p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  stat_paths = {p for p, _ in nnx.to_flat_state(stats)}
  assert not param_paths & stat_paths
  assert {p[-1] for p in stat_paths} == {'mean', 'var'}
  assert not {'mean', 'var'} & {p[-1] for p in param_paths}
  # Residual kinds: unit 1 none, stride/width changes conv, else identity.
  kinds = [u.residual_kind for u in model.units]
  assert kinds == [
    'none',
    'conv',
    'identity',
    'identity',
    'conv',
    'identity',
    'identity',
    'conv',
    'identity',
    'identity',
  ]


# 3 input channels take agcn.aggregate's einsum, 16 its batched matmul.
@pytest.mark.parametrize('cin', [3, 16])
def test_adaptive_graph_conv_matches_reference_unit_gcn(cin):
  """NumPy 2s-AGCN unit_gcn (eval mode): per-subset attention + A + PA."""
  assert (cin <= agcn.EINSUM_MAX_CHANNELS) == (cin == 3)  # one per path
  cout, t, n = 8, 6, 2
  conv = _fill(
    _abstract(lambda: agcn.AdaptiveGraphConv(cin, cout, rngs=nnx.Rngs(0))),
    seed=3,
  )
  # Non-trivial PA and BN so every term matters.
  rng = np.random.default_rng(4)
  conv.pa[...] = jnp.asarray(rng.normal(0, 0.1, (K, 25, 25)), jnp.float32)
  conv.bn.mean[...] = jnp.asarray(rng.normal(0, 0.1, cout), jnp.float32)
  conv.bn.var[...] = jnp.asarray(rng.uniform(0.5, 2, cout), jnp.float32)
  x = rng.normal(size=(n, t, 25, cin)).astype(np.float32)
  got = np.asarray(conv(jnp.asarray(x), train=False))

  inter = cout // 4
  wa, ba = np.asarray(conv.embed_a.kernel), np.asarray(conv.embed_a.bias)
  wb, bb = np.asarray(conv.embed_b.kernel), np.asarray(conv.embed_b.bias)
  wd, bd = np.asarray(conv.project.kernel), np.asarray(conv.project.bias)
  a_fixed = graph.agcn_spatial_partition() + np.asarray(conv.pa)
  y = np.zeros((n, t, 25, cout)) + bd
  for k in range(K):
    sl = slice(k * inter, (k + 1) * inter)
    a = x @ wa[:, sl] + ba[sl]  # (n, t, v, inter)
    b = x @ wb[:, sl] + bb[sl]
    # torch: A1 (N, V, inter*T) @ A2 (N, inter*T, V) / (inter*T), softmax -2.
    a1 = a.transpose(0, 2, 3, 1).reshape(n, 25, inter * t)
    b1 = b.transpose(0, 3, 1, 2).reshape(n, inter * t, 25)
    s = a1 @ b1 / (inter * t)
    s = np.exp(s - s.max(1, keepdims=True))
    s = s / s.sum(1, keepdims=True)
    adj = s + a_fixed[k]  # (n, v, w)
    z = np.einsum('ntvc,nvw->ntwc', x, adj)  # out[w] = sum_v x[v] A[v,w]
    y += z @ wd[k * cin : (k + 1) * cin]  # conv_d[k]

  def bn(h, mod):
    return np.asarray(mod.scale) * (h - np.asarray(mod.mean)) / np.sqrt(
      np.asarray(mod.var) + 1e-5
    ) + np.asarray(mod.bias)

  res = bn(
    x @ np.asarray(conv.down.kernel) + np.asarray(conv.down.bias), conv.down_bn
  )
  want = np.maximum(bn(y, conv.bn) + res, 0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _joint_affinity_numpy(x, wa, ba, wb, bb, r, k):
  """S[n, k, v, w] = sum over (t, i) of a[n, t, v, k, i] b[n, t, w, k, i]
  (a = x wa + ba, b = x wb + bb), and the gradients of sum(S * r) for x, the
  kernels and the biases, by the chain rule in float64."""
  n, t, v, c = x.shape
  a = (x @ wa + ba).reshape(n, t, v, k, -1)
  b = (x @ wb + bb).reshape(n, t, v, k, -1)
  s = np.einsum('ntvki,ntwki->nkvw', a, b)
  da = np.einsum('nkvw,ntwki->ntvki', r, b).reshape(n, t, v, -1)
  db = np.einsum('nkvw,ntvki->ntwki', r, a).reshape(n, t, v, -1)
  flat = x.reshape(-1, c)
  grads = {
    'x': da @ wa.T + db @ wb.T,
    'wa': flat.T @ da.reshape(flat.shape[0], -1),
    'ba': da.sum((0, 1, 2)),
    'wb': flat.T @ db.reshape(flat.shape[0], -1),
    'bb': db.sum((0, 1, 2)),
  }
  return s, grads


@pytest.mark.parametrize('sharded', [False, True])
def test_joint_affinity_and_its_gradients_match_numpy(sharded):
  """agcn.joint_affinity writes the embeddings joints-last and contracts
  them with one batched matmul; output and the gradients of x and both
  embeddings must equal the plain per-subset sum in float64."""
  n, t, v, c, inter = 8, 5, 4, 6, 2
  rng = np.random.default_rng(5)
  embed_a = layers.dense(c, K * inter, nnx.Rngs(0))
  embed_b = layers.dense(c, K * inter, nnx.Rngs(1))
  for dense in (embed_a, embed_b):
    dense.kernel[...] = jnp.asarray(
      rng.normal(size=(c, K * inter)), jnp.float32
    )
    dense.bias[...] = jnp.asarray(rng.normal(size=K * inter), jnp.float32)
  x = rng.normal(size=(n, t, v, c)).astype(np.float32)
  r = rng.normal(size=(n, K, v, v))
  want, want_grads = _joint_affinity_numpy(
    x.astype(np.float64),
    *[
      np.asarray(p[...], np.float64)
      for d in (embed_a, embed_b)
      for p in (d.kernel, d.bias)
    ],
    r,
    K,
  )
  graphdef, params = nnx.split((embed_a, embed_b))

  def loss(params, x):
    a, b = nnx.merge(graphdef, params)
    s = agcn.joint_affinity(x, a, b, K)
    return jnp.sum(s * r.astype(np.float32)), s

  if sharded:
    x = jax.device_put(
      x,
      jax.sharding.NamedSharding(
        train_utils.make_mesh(), jax.sharding.PartitionSpec('data')
      ),
    )
  (_, s), (dparams, dx) = jax.jit(
    jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  )(params, x)
  tol = dict(rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(s), want, **tol)
  np.testing.assert_allclose(np.asarray(dx), want_grads['x'], **tol)
  for i, name in enumerate('ab'):
    got = dparams[i]
    np.testing.assert_allclose(
      np.asarray(got['kernel'][...]), want_grads['w' + name], **tol
    )
    np.testing.assert_allclose(
      np.asarray(got['bias'][...]), want_grads['b' + name], **tol
    )


def test_init_scheme():
  # Library init for one wide unit: enough samples for tight statistics.
  unit = agcn.AGCNUnit(128, 256, stride=2, rngs=nnx.Rngs(0))
  kernels = {
    'embed_a': unit.gcn.embed_a.kernel,
    'project': unit.gcn.project.kernel,
    'down': unit.gcn.down.kernel,
    'tcn': unit.tcn.conv.kernel,
    'residual': unit.residual.conv.kernel,
  }
  for name, k in kernels.items():
    k = np.asarray(k)
    assert abs(k.std() - 0.02) < 0.002, name
    assert abs(k.mean()) < 0.002, name
  bns = [unit.gcn.bn, unit.gcn.down_bn, unit.tcn.bn, unit.residual.bn]
  scales = np.concatenate([np.asarray(b.scale) for b in bns])
  assert abs(scales.mean() - 1.0) < 0.005
  assert abs(scales.std() - 0.02) < 0.005
  for b in bns:
    np.testing.assert_array_equal(b.bias, 0.0)
    np.testing.assert_array_equal(b.mean, 0.0)
    np.testing.assert_array_equal(b.var, 1.0)
  # PyTorch momentum 0.1 == Flax 0.9, eps 1e-5.
  assert unit.gcn.bn.momentum == pytest.approx(0.9)
  assert unit.gcn.bn.epsilon == pytest.approx(1e-5)
  np.testing.assert_array_equal(
    unit.gcn.pa, np.full((3, 25, 25), 1e-6, np.float32)
  )
  np.testing.assert_array_equal(unit.gcn.project.bias, 0.0)
  np.testing.assert_array_equal(unit.tcn.conv.bias, 0.0)


@pytest.mark.parametrize(
  'shape', [(), (1,), (8, 6), (3, 48), (9, 1, 64, 64), (65,), (4097, 3)]
)
def test_initializers_draw_what_the_direct_draws_give(shape):
  # The bucketed eager draws against JAX's own, shape by shape, bit for bit.
  key = jax.random.key(11)
  normal = jax.random.normal(key, shape)
  np.testing.assert_array_equal(layers.standard_normal(key, shape), normal)
  np.testing.assert_array_equal(
    jax.jit(lambda k: layers.standard_normal(k, shape))(key), normal
  )
  np.testing.assert_array_equal(
    layers.weight_init(key, shape),
    jax.nn.initializers.normal(0.02)(key, shape, jnp.float32),
  )
  np.testing.assert_array_equal(
    layers.bn_scale_init(key, shape), 1.0 + 0.02 * normal
  )


# -------------------------------------------------------- BatchNorm ----


def _torch_bn_train(
  x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5
):
  """PyTorch BatchNorm1d/2d in training mode, from the torch.nn docs, on a
  channels-first (N, C, *) float64 array: normalise with the biased batch
  variance; running_mean/var <- (1 - momentum) * running + momentum * batch
  statistic, the variance being the unbiased one (ddof=1).
  Returns (y, running_mean, running_var)."""
  axes = (0,) + tuple(range(2, x.ndim))
  shape = (1, -1) + (1,) * (x.ndim - 2)
  mean = x.mean(axis=axes)
  y = (x - mean.reshape(shape)) / np.sqrt(
    x.var(axis=axes).reshape(shape) + eps
  ) * weight.reshape(shape) + bias.reshape(shape)
  return (
    y,
    (1 - momentum) * running_mean + momentum * mean,
    (1 - momentum) * running_var + momentum * x.var(axis=axes, ddof=1),
  )


def _bn_case(shape, seed):
  """A BN with non-trivial params and running stats, input x (channels-last)."""
  c = shape[-1]
  rng = np.random.default_rng(seed)
  bn = layers.batch_norm(c, nnx.Rngs(0))
  bn.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32)
  bn.bias[...] = jnp.asarray(rng.normal(0, 0.5, c), jnp.float32)
  bn.mean[...] = jnp.asarray(rng.normal(0, 1, c), jnp.float32)
  bn.var[...] = jnp.asarray(rng.uniform(0.5, 2, c), jnp.float32)
  x = (
    rng.normal(size=shape) * rng.uniform(0.5, 3, c) + rng.normal(0, 2, c)
  ).astype(np.float32)
  return bn, x


def _channels_first(x):
  return np.moveaxis(x, -1, 1).astype(np.float64)


def _bn_train_jit(bn, x):
  """One jitted train-mode call: (y, mean, var) and the module updated."""
  graphdef, state = nnx.split(bn)

  @jax.jit
  def step(state, x):
    mod = nnx.merge(graphdef, state)
    return mod(x, use_running_average=False), nnx.state(mod)

  y, state = step(state, x)
  nnx.update(bn, state)
  return y


def _check_bn(bn, x, y, ref_stats, rtol=1e-5, atol=1e-5):
  want_y, want_mean, want_var = ref_stats
  assert bn.mean.dtype == bn.var.dtype == jnp.float32
  np.testing.assert_allclose(
    np.asarray(bn.mean), want_mean, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(np.asarray(bn.var), want_var, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    np.moveaxis(np.asarray(y, np.float32), -1, 1), want_y, rtol=rtol, atol=atol
  )


# (N, T, C): BatchNorm1d over (N, T); (N, T, V, C): BatchNorm2d over (N, T, V).
# Few elements per channel so that n / (n - 1) is far from 1.
@pytest.mark.parametrize('shape', [(2, 3, 5), (3, 4, 5), (2, 3, 4, 6)])
def test_batch_norm_train_update_matches_torch(shape):
  bn, x = _bn_case(shape, seed=len(shape))
  params = [
    np.asarray(getattr(bn, k), np.float64)
    for k in ('scale', 'bias', 'mean', 'var')
  ]
  # Two steps: the second starts from the first's running statistics.
  x2 = (x[::-1] * 0.5 + 1.0).copy()
  for step_x in (x, x2):
    ref = _torch_bn_train(_channels_first(step_x), *params)
    y = bn(jnp.asarray(step_x), use_running_average=False)
    _check_bn(bn, step_x, y, ref)
    params[2:] = ref[1:]
  # Eval mode normalises with the running statistics.
  scale, bias, mean, var = (
    p.reshape((1, -1) + (1,) * (x.ndim - 2)) for p in params
  )
  want = (_channels_first(x) - mean) / np.sqrt(var + 1e-5) * scale + bias
  got = bn(jnp.asarray(x), use_running_average=True)
  np.testing.assert_allclose(
    np.moveaxis(np.asarray(got), -1, 1), want, rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize('shape', [(8, 3, 5), (16, 2, 4, 6)])
def test_batch_norm_global_statistics_under_sharded_jit(shape):
  """SyncBN: with the batch sharded over 8 devices the statistics (and n)
  cover the global batch, as one PyTorch BatchNorm on the whole batch."""
  bn, x = _bn_case(shape, seed=7)
  params = [
    np.asarray(getattr(bn, k), np.float64)
    for k in ('scale', 'bias', 'mean', 'var')
  ]
  ref = _torch_bn_train(_channels_first(x), *params)
  mesh = jax.make_mesh((8,), ('data',))
  xs = jax.device_put(
    x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  )
  y = _bn_train_jit(bn, xs)
  _check_bn(bn, x, y, ref)


def _bn_loss_numpy(x, scale, bias, r, r_mean, r_var, eps=1e-5):
  """sum(y * r) + sum(mean * r_mean) + sum(var * r_var) of a float64
  training-mode BN over every axis but the last (biased variance)."""
  axes = tuple(range(x.ndim - 1))
  mean, var = x.mean(axes), x.var(axes)
  y = (x - mean) / np.sqrt(var + eps) * scale + bias
  return (y * r).sum() + (mean * r_mean).sum() + (var * r_var).sum()


def _central_differences(f, args, h=1e-6):
  """Gradient of f at args (float64 arrays) by central differences."""
  grads = []
  for i, a in enumerate(args):
    g = np.zeros_like(a)
    for j in np.ndindex(a.shape):
      hi, lo = [list(args) for _ in range(2)]
      hi[i], lo[i] = a.copy(), a.copy()
      hi[i][j] += h
      lo[i][j] -= h
      g[j] = (f(*hi) - f(*lo)) / (2 * h)
    grads.append(g)
  return grads


@pytest.mark.parametrize(
  'shape,sharded', [((4, 3, 5), False), ((8, 2, 3, 4), True)]
)
def test_batch_statistics_normalization_gradients_match_differences(
  shape, sharded
):
  """layers.normalize_with_batch_statistics has a hand-written backward
  pass: the gradients of its output and of its mean and variance (which the
  running averages read) must equal central differences of a float64 BN,
  also with the batch sharded over 8 devices (SyncBN)."""
  rng = np.random.default_rng(len(shape))
  c = shape[-1]
  x = rng.normal(size=shape) * rng.uniform(0.5, 3, c) + rng.normal(0, 2, c)
  scale, bias = rng.uniform(0.5, 1.5, c), rng.normal(size=c)
  r, r_mean, r_var = (
    rng.normal(size=shape),
    rng.normal(size=c),
    rng.normal(size=c),
  )
  want = _central_differences(
    lambda *a: _bn_loss_numpy(*a, r, r_mean, r_var), (x, scale, bias)
  )

  def loss(x, scale, bias):
    y, mean, var = layers.normalize_with_batch_statistics(x, scale, bias, 1e-5)
    return (
      jnp.sum(y * r.astype(np.float32))
      + jnp.sum(mean * r_mean.astype(np.float32))
      + jnp.sum(var * r_var.astype(np.float32))
    )

  args = [a.astype(np.float32) for a in (x, scale, bias)]
  if sharded:
    args[0] = jax.device_put(
      args[0],
      jax.sharding.NamedSharding(
        train_utils.make_mesh(), jax.sharding.PartitionSpec('data')
      ),
    )
  got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4)


def _time_conv_numpy(x, w, b, stride):
  """float64 reference: y[n, t, v, d] = b[d] + sum_k,c x_pad[n, t*s + k, v, c]
  w[k, c, d], with its gradients for the loss sum(y * r)."""
  size = w.shape[0]
  pad = (size - 1) // 2
  xp = np.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)))
  t_out = (x.shape[1] + 2 * pad - size) // stride + 1
  taps = [xp[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(size)]
  y = b + sum(np.einsum('ntvc,cd->ntvd', taps[k], w[k]) for k in range(size))

  def grads(r):
    dw = np.stack([np.einsum('ntvc,ntvd->cd', taps[k], r) for k in range(size)])
    dxp = np.zeros_like(xp)
    for k in range(size):
      dxp[:, k : k + stride * (t_out - 1) + 1 : stride] += r @ w[k].T
    return dxp[:, pad : pad + x.shape[1]], dw, r.sum((0, 1, 2))

  return y, grads


def _output_and_grads(layer, x, r, sharded):
  """layer(x), and the gradients of sum(layer(x) * r) for its parameters and
  x, jitted; with ``sharded`` the batch is split over the library's mesh
  (Auto axes, as training uses)."""
  graphdef, params = nnx.split(layer)

  def loss(params, x):
    y = nnx.merge(graphdef, params)(x)
    return jnp.sum(y * r), y

  if sharded:
    mesh = train_utils.make_mesh()
    x = jax.device_put(
      x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    )
  (_, y), (dparams, dx) = jax.jit(
    jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  )(params, x)
  return y, dparams, dx


@pytest.mark.parametrize(
  'size,stride,length,joints,sharded',
  [
    (9, 1, 11, True, False),
    (9, 2, 11, True, False),
    (9, 2, 12, True, False),
    (9, 2, 11, True, True),
    (5, 3, 13, True, False),
    (1, 2, 11, True, False),
    (3, 1, 11, False, False),
    (3, 2, 12, False, False),
    (5, 3, 13, False, True),
    (1, 1, 11, False, True),
  ],
)
def test_time_conv_and_its_gradients_match_numpy(
  size, stride, length, joints, sharded
):
  """layers.TimeConv computes its gradients its own way (the weight gradient
  as a convolution with the input channels as batch, a strided input
  gradient one phase at a time); forward and every gradient must equal a
  float64 NumPy convolution, at odd and even lengths, also with the batch
  sharded over 8 devices."""
  rng = np.random.default_rng(size * 10 + stride + length)
  shape = (8, length, 3, 5) if joints else (8, length, 5)
  x = rng.normal(size=shape).astype(np.float32)
  conv = layers.TimeConv(
    5, 4, size, stride=stride, joints=joints, rngs=nnx.Rngs(0)
  )
  conv.bias[...] = jnp.asarray(rng.normal(size=4), jnp.float32)
  w = np.asarray(conv.kernel[...], np.float64).reshape(size, 5, 4)
  b = np.asarray(conv.bias[...], np.float64)
  x4 = x.astype(np.float64) if joints else x[:, :, None].astype(np.float64)
  want, grads = _time_conv_numpy(x4, w, b, stride)
  r = rng.normal(size=want.shape)
  r_in = (r if joints else r[:, :, 0]).astype(np.float32)
  want_dx, want_dw, want_db = grads(r)

  y, dparams, dx = _output_and_grads(conv, x, r_in, sharded)
  if not joints:
    want, want_dx = want[:, :, 0], want_dx[:, :, 0]
  tol = dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(y), want, **tol)
  np.testing.assert_allclose(np.asarray(dx), want_dx, **tol)
  np.testing.assert_allclose(
    np.asarray(dparams['kernel'][...]).reshape(want_dw.shape), want_dw, **tol
  )
  np.testing.assert_allclose(np.asarray(dparams['bias'][...]), want_db, **tol)


@pytest.mark.parametrize(
  'shape,sharded',
  [((8, 6, 3, 5), False), ((8, 6, 3, 5), True), ((8, 5), False)],
)
def test_dense_and_its_gradients_match_numpy(shape, sharded):
  """layers.Dense has its own backward pass (``layers.matmul``): output and
  the gradients of input, kernel and bias must equal float64 NumPy."""
  rng = np.random.default_rng(len(shape))
  x = rng.normal(size=shape).astype(np.float32)
  layer = layers.dense(5, 4, nnx.Rngs(0))
  layer.bias[...] = jnp.asarray(rng.normal(size=4), jnp.float32)
  w = np.asarray(layer.kernel[...], np.float64)
  b = np.asarray(layer.bias[...], np.float64)
  r = rng.normal(size=shape[:-1] + (4,))
  x64 = x.astype(np.float64)
  y, dparams, dx = _output_and_grads(layer, x, r.astype(np.float32), sharded)
  flat_x, flat_r = x64.reshape(-1, 5), r.reshape(-1, 4)
  tol = dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(y), x64 @ w + b, **tol)
  np.testing.assert_allclose(np.asarray(dx), r @ w.T, **tol)
  np.testing.assert_allclose(
    np.asarray(dparams['kernel'][...]), flat_x.T @ flat_r, **tol
  )
  np.testing.assert_allclose(
    np.asarray(dparams['bias'][...]), flat_r.sum(0), **tol
  )


def test_batch_norm_bf16_compute_keeps_float32_statistics():
  """bf16 input and params (pretrain compute_dtype=bfloat16): statistics are
  float32 and equal PyTorch's on the bf16 values."""
  bn, x = _bn_case((4, 6, 3, 8), seed=11)
  xb = jnp.asarray(x, jnp.bfloat16)
  graphdef, params, stats = nnx.split(bn, nnx.Param, nnx.BatchStat)
  ref = _torch_bn_train(
    _channels_first(np.asarray(xb, np.float32)),
    *[
      np.asarray(jnp.asarray(p, jnp.bfloat16), np.float64)
      for p in (bn.scale[...], bn.bias[...])
    ],
    np.asarray(bn.mean, np.float64),
    np.asarray(bn.var, np.float64),
  )
  bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  mod = nnx.merge(graphdef, bf16, stats)
  y = _bn_train_jit(mod, xb)
  assert np.isfinite(np.asarray(y, np.float32)).all()
  _check_bn(mod, x, y, ref, rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------ heads ----


def test_ufusion_head_channel_arithmetic_width1():
  c = [PAPER_CHANNELS[i - 1] for i in (1, 7, 10)]
  assert c == [64, 128, 256]
  num_classes = 5
  head = _abstract(
    lambda: UFusionHead(tuple(c), 512, num_classes + 1, rngs=nnx.Rngs(0))
  )
  # ConvUnit(192), (384), (640): conv k3, c -> c (docs/method.md §4).
  for cu, ch in ((head.cu01, 192), (head.cu11, 384), (head.cu02, 640)):
    assert cu.conv.kernel.shape == (3, ch, ch)
    assert cu.bn.scale.shape == (ch,)
  assert head.fuse.kernel.shape == (1, 896, 512)
  assert head.classifier.kernel.shape == (512, num_classes + 1)
  t = 30
  taps = [
    jax.ShapeDtypeStruct((2, t, 64), jnp.float32),
    jax.ShapeDtypeStruct((2, 8, 128), jnp.float32),
    jax.ShapeDtypeStruct((2, 4, 256), jnp.float32),
  ]
  out = nnx.eval_shape(lambda h, taps: h(taps, False, length=t), head, taps)
  assert out.shape == (2, t, num_classes + 1)
  feats = nnx.eval_shape(lambda h, taps: h.features(taps, False), head, taps)
  assert feats.shape == (2, t, 512)


def _randomized(module, seed=0):
  """Every parameter and BN statistic random (variances positive), so that
  a wrong channel order, axis or missing term changes the output."""
  graphdef, state = nnx.split(module)
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    name = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)][-1]
    v = rng.normal(0.0, 0.5, leaf.shape)
    if name in ('scale', 'var'):
      v = rng.uniform(0.5, 1.5, leaf.shape)
    return jnp.asarray(v, leaf.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(init, state))


def _np(a):
  return np.asarray(a, np.float64)


def _np_bn_eval(x, bn):
  return (x - _np(bn.mean)) / np.sqrt(_np(bn.var) + 1e-5) * _np(bn.scale) + _np(
    bn.bias
  )


def _np_conv_unit(x, cu):
  """conv k3 (zero pad 1, cross-correlation) -> BN (eval) -> ReLU; (N, T, C)."""
  w, b = _np(cu.conv.kernel), _np(cu.conv.bias)
  xp = np.pad(x, ((0, 0), (1, 1), (0, 0)))
  y = sum(xp[:, k : k + x.shape[1]] @ w[k] for k in range(3)) + b
  return np.maximum(_np_bn_eval(y, cu.bn), 0.0)


def _np_up(x, length):
  return x[:, np.arange(length) * x.shape[1] // length]


def test_ufusion_head_matches_numpy():
  """docs/method.md §4 written out in NumPy (eval mode). Guards against a
  reordered concatenation (same channel count, e.g. cat[up(x1), x0])."""
  c = (3, 4, 5)
  head = _randomized(UFusionHead(c, 6, 3, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(1)
  x0, x1, x2 = (rng.normal(size=(2, t, ch)) for t, ch in zip((16, 4, 2), c))
  x01 = _np_conv_unit(np.concatenate([x0, _np_up(x1, 16)], -1), head.cu01)
  x11 = _np_conv_unit(np.concatenate([x1, _np_up(x2, 4)], -1), head.cu11)
  x02 = _np_conv_unit(np.concatenate([x0, x01, _np_up(x11, 16)], -1), head.cu02)
  fused = np.concatenate([x0, x01, x02], -1) @ _np(head.fuse.kernel)[0] + _np(
    head.fuse.bias
  )
  logits = fused @ _np(head.classifier.kernel) + _np(head.classifier.bias)
  taps = [jnp.asarray(a, jnp.float32) for a in (x0, x1, x2)]
  np.testing.assert_allclose(
    head.features(taps, False), fused, rtol=1e-4, atol=1e-4
  )
  np.testing.assert_allclose(head(taps, False), logits, rtol=1e-4, atol=1e-4)


def test_part_relation_branch_matches_numpy():
  """RVTCLR's IntraPart + InterPart (eval mode) in NumPy, with the body parts
  written out from the release (0-based NTU joints)."""
  parts = [
    (0, 1, 2, 3, 20),
    (16, 17, 18, 19),
    (12, 13, 14, 15),
    (8, 9, 10, 11, 23, 24),
    (4, 5, 6, 7, 21, 22),
  ]
  ch = 6
  branch = _randomized(heads.PartRelationBranch(ch, rngs=nnx.Rngs(0)))
  feats = np.random.default_rng(2).normal(size=(2, 5, 25, ch))
  lin = lambda x, m: x @ _np(m.kernel) + (0 if m.bias is None else _np(m.bias))
  p = np.stack([feats[:, :, list(j)].mean(2) for j in parts], 2)  # (B,T,5,C)
  x = lin(np.maximum(lin(p, branch.squeeze), 0), branch.excite)
  mean = x.mean(2)  # (B,T,C)
  s = np.einsum('btc,bsc->bts', lin(mean, branch.theta), lin(mean, branch.phi))
  att = np.exp(s - s.max(-1, keepdims=True))
  att /= att.sum(-1, keepdims=True)  # softmax over the attended steps
  y = np.einsum('bts,bspc->btpc', att, lin(x, branch.g))
  want = _np_bn_eval(lin(y, branch.out), branch.out_bn) + x
  got = branch(jnp.asarray(feats, jnp.float32), False)
  assert got.shape == (2, 5, 5, ch)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _torch_linear_resize(x, length):
  """PyTorch interpolate(mode='linear', align_corners=False) along axis 1."""
  src_len = x.shape[1]
  out = np.zeros((x.shape[0], length, x.shape[2]))
  for i in range(length):
    s = max((i + 0.5) * src_len / length - 0.5, 0.0)
    i0 = min(int(math.floor(s)), src_len - 1)
    i1 = min(i0 + 1, src_len - 1)
    lam = s - i0
    out[:, i] = (1 - lam) * x[:, i0] + lam * x[:, i1]
  return out


@pytest.mark.parametrize('length', [None, 37, 30])
def test_upsample_head_resizes_to_requested_length(length):
  head = _fill(
    _abstract(lambda: UpsampleHead((8, 16, 32), 512, 4, rngs=nnx.Rngs(0)))
  )
  rng = np.random.default_rng(0)
  taps = [
    rng.normal(size=(2, 16, 8)),
    rng.normal(size=(2, 4, 16)),
    rng.normal(size=(2, 4, 32)),
  ]
  taps = [jnp.asarray(a, jnp.float32) for a in taps]
  out = np.asarray(head(taps, False, length=length))
  want_len = 16 if length is None else length
  assert out.shape == (2, want_len, 4)
  logits = np.asarray(taps[-1]) @ np.asarray(head.classifier.kernel)
  np.testing.assert_allclose(
    out, _torch_linear_resize(logits, want_len), rtol=1e-5, atol=1e-5
  )


def _pool_reference(length, bins):
  m = np.zeros((bins, length))
  for i in range(bins):
    start = math.floor(fractions.Fraction(i * length, bins))
    end = math.ceil(fractions.Fraction((i + 1) * length, bins))
    m[i, start:end] = 1.0 / (end - start)
  return m


@pytest.mark.parametrize(
  'length,bins',
  [
    (10, 3),
    (19, 19),
    (38, 19),
    (40, 19),
    (7, 5),
    (100, 19),
    (16, 4),
    (5, 7),
    (1, 1),
  ],
)
def test_adaptive_pool_matrix_matches_torch_bins(length, bins):
  m = heads.adaptive_pool_matrix(length, bins)
  assert m.shape == (bins, length)
  np.testing.assert_allclose(m, _pool_reference(length, bins), rtol=1e-6)
  np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-6)
  if length % bins == 0:
    # Non-overlapping equal bins: each frame lands in exactly one bin.
    np.testing.assert_array_equal((m > 0).sum(0), 1)
    np.testing.assert_allclose(m[m > 0], bins / length, rtol=1e-6)
  x = np.random.default_rng(0).normal(size=(2, length, 3)).astype(np.float32)
  got = heads.adaptive_avg_pool(jnp.asarray(x), bins)
  want = np.stack([x[:, np.nonzero(r)[0]].mean(1) for r in m], 1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _torch_nearest_index(src, dst):
  """ATen's ``nearest_idx`` (UpSample.h) for a size-given interpolate, one
  output index at a time in float32 scalars: identity for equal sizes, i >> 1
  for exact 2x, else min((int64) floorf(i * scale), src - 1) with
  scale = (float) src / dst."""
  if src == dst:
    return list(range(dst))
  if dst == 2 * src:
    return [i >> 1 for i in range(dst)]
  scale = np.float32(src) / np.float32(dst)
  return [
    min(int(math.floor(np.float32(i) * scale)), src - 1) for i in range(dst)
  ]


def _check_nearest(src, dst):
  x = np.arange(2 * src * 3, dtype=np.float32).reshape(2, src, 3)
  idx = _torch_nearest_index(src, dst)
  np.testing.assert_array_equal(
    heads.upsample_nearest(jnp.asarray(x), dst), x[:, idx]
  )


# (50, 198): the unit-7 tap at T = 198; (24, 94), (28, 110): other model
# lengths; the rest small and hand-checkable.
@pytest.mark.parametrize(
  'src,dst',
  [
    (4, 16),
    (8, 30),
    (4, 8),
    (15, 30),
    (3, 10),
    (7, 7),
    (5, 3),
    (40, 320),
    (24, 94),
    (28, 110),
    (50, 198),
    (25, 50),
    (99, 198),
  ],
)
def test_upsample_nearest_matches_torch_float32_rule(src, dst):
  _check_nearest(src, dst)


def test_upsample_nearest_hand_checked_indices():
  # floor(i * 0.3): 0 0 0 0 1.2 1.5 1.8 2.1 2.4 2.7.
  assert _torch_nearest_index(3, 10) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
  # Downsampling: floor(i * 5/3) = 0, 1, 3.
  assert _torch_nearest_index(5, 3) == [0, 1, 3]
  for src, dst, want in (
    (3, 10, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]),
    (5, 3, [0, 1, 3]),
  ):
    np.testing.assert_array_equal(heads._nearest_index(src, dst), want)  # pylint: disable=protected-access


def test_upsample_nearest_t198_reads_torch_index():
  """Issue 10 item 5a: at T = 198 frame 99 of the unit-7 upsample reads step
  24 in PyTorch (float32 99 * (50 / 198) = 24.999998), not the exact 25."""
  t = 198
  # Unit-7 length: AGCN's stride-2 units 2 and 5 ceil-halve T: 198, 99, 50.
  src = _ceil_half(_ceil_half(t))
  assert src == 50
  model = _abstract(lambda: AGCN(width=0.125, rngs=nnx.Rngs(0)))
  outs = nnx.eval_shape(
    lambda mod, x: mod(x, False),
    model,
    jax.ShapeDtypeStruct((1, t, 25, 3), jnp.float32),
  )
  assert outs[6].shape[1] == src
  assert 99 * src // t == 25  # the exact rule we used before
  idx = heads._nearest_index(src, t)  # pylint: disable=protected-access
  assert idx[99] == 24
  assert idx[98] == 24 and idx[100] == 25  # 24.747473, 25.252523
  x = np.arange(src, dtype=np.float32).reshape(1, src, 1)
  np.testing.assert_array_equal(
    np.asarray(heads.upsample_nearest(jnp.asarray(x), t))[0, 99:101, 0],
    [24.0, 25.0],
  )


def test_l2_normalize():
  x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32) * 3
  y = np.asarray(heads.l2_normalize(jnp.asarray(x)))
  np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(
    y, x / np.linalg.norm(x, axis=-1, keepdims=True), rtol=1e-5
  )
  # A zero vector stays finite (eps guard).
  np.testing.assert_array_equal(heads.l2_normalize(jnp.zeros((1, 4))), 0.0)


# ----------------------------------------------------------- models ----


def _small_cfg():
  cfg = model_config(0.125)
  cfg.feature_dim = 16
  cfg.num_snippets = 2  # T' = 32 / 8 = 4 frames -> 2 snippets of 2
  return cfg


def test_moco_encoder_shapes_norms_and_person_mean():
  cfg = _small_cfg()
  enc = _fill(_abstract(lambda: MoCoEncoder(cfg, rngs=nnx.Rngs(0))))
  a, b = _skeletons(2, 1, seed=1)[:, 0]
  # Folded batch is 4 in both calls (shared shapes, and eval-mode BN keeps
  # samples independent).
  two = np.stack([np.stack([a, a]), np.stack([a, b])])  # (2, 2, T, V, 3)
  one = np.stack([a, b, a, b])[:, None]  # (4, 1, T, V, 3)
  out2 = enc(jnp.asarray(two), train=False)
  out1 = enc(jnp.asarray(one), train=False)
  c = enc.backbone.out_channels
  assert c == 32
  assert out2['global'].shape == (2, 16)
  assert out2['snippets'].shape == (2, 2, 16)
  assert out2['snippet_feats'].shape == (2, 2, c)
  for key in ('global', 'snippets'):
    np.testing.assert_allclose(
      np.linalg.norm(out2[key], axis=-1), 1.0, rtol=1e-5
    )
  # Identical persons == that person alone.
  for key in ('global', 'snippets', 'snippet_feats'):
    np.testing.assert_allclose(out2[key][0], out1[key][0], rtol=1e-4, atol=1e-6)
  # Pooled features are linear in the person mean: (a, b) -> mean of a, b.
  np.testing.assert_allclose(
    out2['snippet_feats'][1],
    (out1['snippet_feats'][0] + out1['snippet_feats'][1]) / 2,
    rtol=1e-4,
    atol=1e-6,
  )
  assert not np.allclose(out1['snippet_feats'][0], out1['snippet_feats'][1])


def _stats(model):
  return [
    np.asarray(l) for l in jax.tree.leaves(nnx.state(model, nnx.BatchStat))
  ]


@pytest.mark.parametrize('head', ['ufusion', 'upsample'])
def test_localizer_output_and_batch_stats(head):
  cfg = _small_cfg()
  cfg.head = head
  num_classes = 3
  loc = _fill(_abstract(lambda: Localizer(cfg, num_classes, rngs=nnx.Rngs(0))))
  x = jnp.asarray(_skeletons(2, 2))
  before = _stats(loc)
  out = loc(x, train=False)
  assert out.shape == (2, T_RUN, num_classes + 1)
  assert np.isfinite(np.asarray(out)).all()
  for s0, s1 in zip(before, _stats(loc)):
    np.testing.assert_array_equal(s0, s1)
  loc(x, train=True)
  after = _stats(loc)
  assert len(after) == len(before) > 0
  # Every BN (backbone and head) saw a batch and moved its statistics.
  for s0, s1 in zip(before, after):
    assert not np.allclose(s0, s1)


# ---------------------------------------------------------------------------
# Base-method pieces: AimCLR's EADM drop and RVTCLR's heads.
# ---------------------------------------------------------------------------
def test_energy_attention_drop_matches_simam_drop():
  from skel_jax.models.heads import energy_attention_drop

  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 6, 25, 4)).astype(np.float32)  # (B, T, V, C)
  got = np.asarray(energy_attention_drop(jnp.asarray(x)))
  # AimCLR's Simam_Drop on the channels-first tensor (NM, C, T, V).
  xc = np.transpose(x, (0, 3, 1, 2)).astype(np.float64)
  t, v = xc.shape[2:]
  d = (xc - xc.mean(axis=(2, 3), keepdims=True)) ** 2
  y = d / (4 * (d.sum(axis=(2, 3), keepdims=True) / (t * v - 1) + 1e-4)) + 0.5
  att = 1 / (1 + np.exp(-y))
  mask_s = (att.mean(axis=(1, 2)) < 0.7).astype(np.float64)  # (NM, V)
  out = xc * mask_s[:, None, None, :] * mask_s.size / mask_s.sum()
  mask_t = (att < 0.7).astype(np.float64)
  out = out * mask_t * mask_t.size / mask_t.sum()
  np.testing.assert_allclose(
    got, np.transpose(out, (0, 2, 3, 1)), rtol=1e-5, atol=1e-6
  )


def test_rvtclr_encoder_outputs():
  cfg = model_config(width=0.125)
  cfg.num_snippets = 4
  enc = MoCoEncoder(cfg, relative_tempo_heads=True, rngs=nnx.Rngs(0))
  x = jnp.asarray(
    np.random.default_rng(0).normal(size=(2, 2, 32, 25, 3)), jnp.float32
  )
  main = enc(x)
  assert set(main) == {'global', 'snippets', 'snippet_feats', 'tempo'}
  dc = enc(x, mode='dc')
  assert set(dc) == {'global'}
  for out in (main['global'], main['tempo'], dc['global']):
    assert out.shape == (2, cfg.feature_dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
  # Released RVTCLR heads: linear appearance/tempo heads, MLP on the DC view.
  assert enc.global_head.fc1 is None and enc.tempo_head.fc1 is None
  assert enc.dc_head.fc1 is not None
  eadm = MoCoEncoder(cfg, rngs=nnx.Rngs(0))(x, mode='eadm')
  assert set(eadm) == {'global', 'global_drop'}
  assert not np.allclose(eadm['global'], eadm['global_drop'])
