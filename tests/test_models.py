"""AGCN backbone, heads and full models against the architecture in METHOD.md §2-4.

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
from skel_jax.config_defaults import model_config
from skel_jax.models import agcn, heads
from skel_jax.models import AGCN, Localizer, MoCoEncoder, UFusionHead, UpsampleHead

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
  return np.random.default_rng(seed).normal(size=(n, m, t, 25, 3)).astype(
      np.float32)


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
  """Parameter count of one AGCN unit, from METHOD.md §2 (conv_d fused)."""
  inter = cout // 4
  n = K * 25 * 25                                  # PA
  n += 2 * (cin * K * inter + K * inter)           # embed_a, embed_b
  n += K * cin * cout + cout                       # fused conv_d
  n += 2 * cout                                    # gcn BN
  if cin != cout:
    n += cin * cout + cout + 2 * cout              # down conv + BN
  n += 9 * cout * cout + cout + 2 * cout           # tcn conv + BN
  if unit > 1 and (cin != cout or stride == 2):
    n += cin * cout + cout + 2 * cout              # residual 1x1 conv + BN
  return n


def _bn_channels():
  """Channels of every BatchNorm at width 1 (each holds mean + var)."""
  total, cin = 0, 3
  for unit, cout in enumerate(PAPER_CHANNELS, start=1):
    stride = 2 if unit in STRIDE2_UNITS else 1
    total += cout * 2                              # gcn.bn, tcn.bn
    total += cout * (cin != cout)                  # down_bn
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
        unit, cin, cout, stride), unit
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
  assert kinds == ['none', 'conv', 'identity', 'identity', 'conv', 'identity',
                   'identity', 'conv', 'identity', 'identity']


def test_adaptive_graph_conv_matches_reference_unit_gcn():
  """NumPy 2s-AGCN unit_gcn (eval mode): per-subset attention + A + PA."""
  cin, cout, t, n = 3, 8, 6, 2
  conv = _fill(_abstract(
      lambda: agcn.AdaptiveGraphConv(cin, cout, rngs=nnx.Rngs(0))), seed=3)
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
    a = x @ wa[:, sl] + ba[sl]                      # (n, t, v, inter)
    b = x @ wb[:, sl] + bb[sl]
    # torch: A1 (N, V, inter*T) @ A2 (N, inter*T, V) / (inter*T), softmax -2.
    a1 = a.transpose(0, 2, 3, 1).reshape(n, 25, inter * t)
    b1 = b.transpose(0, 3, 1, 2).reshape(n, inter * t, 25)
    s = a1 @ b1 / (inter * t)
    s = np.exp(s - s.max(1, keepdims=True))
    s = s / s.sum(1, keepdims=True)
    adj = s + a_fixed[k]                            # (n, v, w)
    z = np.einsum('ntvc,nvw->ntwc', x, adj)         # out[w] = sum_v x[v] A[v,w]
    y += z @ wd[k * cin:(k + 1) * cin]              # conv_d[k]
  def bn(h, mod):
    return (np.asarray(mod.scale) * (h - np.asarray(mod.mean))
            / np.sqrt(np.asarray(mod.var) + 1e-5) + np.asarray(mod.bias))
  res = bn(x @ np.asarray(conv.down.kernel) + np.asarray(conv.down.bias),
           conv.down_bn)
  want = np.maximum(bn(y, conv.bn) + res, 0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_init_scheme():
  # Library init for one wide unit: enough samples for tight statistics.
  unit = agcn.AGCNUnit(128, 256, stride=2, rngs=nnx.Rngs(0))
  kernels = {
      'embed_a': unit.gcn.embed_a.kernel, 'project': unit.gcn.project.kernel,
      'down': unit.gcn.down.kernel, 'tcn': unit.tcn.conv.kernel,
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
  np.testing.assert_array_equal(unit.gcn.pa, np.full((3, 25, 25), 1e-6,
                                                     np.float32))
  np.testing.assert_array_equal(unit.gcn.project.bias, 0.0)
  np.testing.assert_array_equal(unit.tcn.conv.bias, 0.0)


# ------------------------------------------------------------ heads ----


def test_ufusion_head_channel_arithmetic_width1():
  c = [PAPER_CHANNELS[i - 1] for i in (1, 7, 10)]
  assert c == [64, 128, 256]
  num_classes = 5
  head = _abstract(lambda: UFusionHead(tuple(c), 512, num_classes + 1,
                                       rngs=nnx.Rngs(0)))
  # ConvUnit(192), (384), (640): conv k3, c -> c (METHOD.md §4).
  for cu, ch in ((head.cu01, 192), (head.cu11, 384), (head.cu02, 640)):
    assert cu.conv.kernel.shape == (3, ch, ch)
    assert cu.bn.scale.shape == (ch,)
  assert head.fuse.kernel.shape == (1, 896, 512)
  assert head.classifier.kernel.shape == (512, num_classes + 1)
  t = 30
  taps = [jax.ShapeDtypeStruct((2, t, 64), jnp.float32),
          jax.ShapeDtypeStruct((2, 8, 128), jnp.float32),
          jax.ShapeDtypeStruct((2, 4, 256), jnp.float32)]
  out = nnx.eval_shape(lambda h, taps: h(taps, False, length=t), head, taps)
  assert out.shape == (2, t, num_classes + 1)
  feats = nnx.eval_shape(lambda h, taps: h.features(taps, False), head, taps)
  assert feats.shape == (2, t, 512)


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
  head = _fill(_abstract(lambda: UpsampleHead((8, 16, 32), 512, 4,
                                              rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(0)
  taps = [rng.normal(size=(2, 16, 8)), rng.normal(size=(2, 4, 16)),
          rng.normal(size=(2, 4, 32))]
  taps = [jnp.asarray(a, jnp.float32) for a in taps]
  out = np.asarray(head(taps, False, length=length))
  want_len = 16 if length is None else length
  assert out.shape == (2, want_len, 4)
  logits = np.asarray(taps[-1]) @ np.asarray(head.classifier.kernel)
  np.testing.assert_allclose(out, _torch_linear_resize(logits, want_len),
                             rtol=1e-5, atol=1e-5)


def _pool_reference(length, bins):
  m = np.zeros((bins, length))
  for i in range(bins):
    start = math.floor(fractions.Fraction(i * length, bins))
    end = math.ceil(fractions.Fraction((i + 1) * length, bins))
    m[i, start:end] = 1.0 / (end - start)
  return m


@pytest.mark.parametrize('length,bins', [(10, 3), (19, 19), (38, 19),
                                         (40, 19), (7, 5), (100, 19),
                                         (16, 4), (5, 7), (1, 1)])
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


def _check_nearest(src, dst):
  x = np.arange(2 * src * 3, dtype=np.float32).reshape(2, src, 3)
  idx = (np.arange(dst) * src) // dst  # exact floor(i * L_src / L_dst)
  np.testing.assert_array_equal(heads.upsample_nearest(jnp.asarray(x), dst),
                                x[:, idx])


@pytest.mark.parametrize('src,dst', [(4, 16), (8, 30), (4, 8), (15, 30),
                                     (3, 10), (7, 7), (5, 3), (40, 320)])
def test_upsample_nearest_index_rule(src, dst):
  _check_nearest(src, dst)


# Lengths where float floor(i * (src / dst)) used to round below the exact
# integer (T=94 -> unit-7 tap of 24 frames).
@pytest.mark.parametrize('src,dst', [(24, 94), (28, 110)])
def test_upsample_nearest_exact_for_model_lengths(src, dst):
  _check_nearest(src, dst)


def test_l2_normalize():
  x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32) * 3
  y = np.asarray(heads.l2_normalize(jnp.asarray(x)))
  np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(y, x / np.linalg.norm(x, axis=-1, keepdims=True),
                             rtol=1e-5)
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
  two = np.stack([np.stack([a, a]), np.stack([a, b])])   # (2, 2, T, V, 3)
  one = np.stack([a, b, a, b])[:, None]                  # (4, 1, T, V, 3)
  out2 = enc(jnp.asarray(two), train=False)
  out1 = enc(jnp.asarray(one), train=False)
  c = enc.backbone.out_channels
  assert c == 32
  assert out2['global'].shape == (2, 16)
  assert out2['snippets'].shape == (2, 2, 16)
  assert out2['snippet_feats'].shape == (2, 2, c)
  for key in ('global', 'snippets'):
    np.testing.assert_allclose(np.linalg.norm(out2[key], axis=-1), 1.0,
                               rtol=1e-5)
  # Identical persons == that person alone.
  for key in ('global', 'snippets', 'snippet_feats'):
    np.testing.assert_allclose(out2[key][0], out1[key][0], rtol=1e-4,
                               atol=1e-6)
  # Pooled features are linear in the person mean: (a, b) -> mean of a, b.
  np.testing.assert_allclose(
      out2['snippet_feats'][1],
      (out1['snippet_feats'][0] + out1['snippet_feats'][1]) / 2,
      rtol=1e-4, atol=1e-6)
  assert not np.allclose(out1['snippet_feats'][0], out1['snippet_feats'][1])


def _stats(model):
  return [np.asarray(l) for l in jax.tree.leaves(nnx.state(model,
                                                           nnx.BatchStat))]


@pytest.mark.parametrize('head', ['ufusion', 'upsample'])
def test_localizer_output_and_batch_stats(head):
  cfg = _small_cfg()
  cfg.head = head
  num_classes = 3
  loc = _fill(_abstract(lambda: Localizer(cfg, num_classes,
                                          rngs=nnx.Rngs(0))))
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
  np.testing.assert_allclose(got, np.transpose(out, (0, 2, 3, 1)), rtol=1e-5,
                             atol=1e-6)


def test_rvtclr_encoder_outputs():
  cfg = model_config(width=0.125)
  cfg.num_snippets = 4
  enc = MoCoEncoder(cfg, base='rvtclr', rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2, 32, 25, 3)),
                  jnp.float32)
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
  eadm = MoCoEncoder(cfg, base='aimclr', rngs=nnx.Rngs(0))(x, mode='eadm')
  assert set(eadm) == {'global', 'global_drop'}
  assert not np.allclose(eadm['global'], eadm['global_drop'])
