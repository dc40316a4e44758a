"""The jitted pretraining step: same result on 1 and 8 devices, and equal to a
straightforward un-jitted single-device computation of the same global batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import step_helpers
from flax import nnx

from skel_jax import augment
from skel_jax import pretrain
from skel_jax import train_utils

# Module caches are shared: tests that share one stay on one xdist worker
# (the AimCLR/RVTCLR tests share _BASE_RUNS in their own group, so the two
# halves of this compile-heavy file can run on different workers).
pytestmark = pytest.mark.xdist_group('pretrain_step')
_base_group = pytest.mark.xdist_group('pretrain_step_bases')

B = step_helpers.B
_config = step_helpers.tiny_config
_batch = step_helpers.tiny_batch


def _run_step(config, devices, mining_step=-1):
  graphdef, before, after, metrics = step_helpers.run_step(
    config, train_utils.make_mesh(devices), mining_step=mining_step
  )
  return graphdef, before, jax.device_get(after), metrics


_CACHE = {}


def _eight_device_run(snippet_weight):
  if snippet_weight not in _CACHE:
    config = _config(snippet_weight)
    _CACHE[snippet_weight] = config, _run_step(config, jax.devices()[:8])
  return _CACHE[snippet_weight]


@pytest.fixture(params=[1.5, 0.0], ids=['snippet', 'video'])
def runs(request):
  return _eight_device_run(request.param)


_assert_same_step = step_helpers.assert_same_step


def test_eight_devices_match_one():
  config, (_, before, s8, m8) = _eight_device_run(1.5)
  _, _, s1, m1 = _run_step(config, jax.devices()[:1])
  _assert_same_step(before, s1, m1, s8, m8)


def _reference(config, graphdef, state):
  """Un-jitted single-device recomputation of keys, queries and the loss."""
  state = jax.tree.map(jnp.asarray, state)  # writable copies for NNX BN
  batch = _batch()
  keys = augment.sample_keys(state['rng'], state['step'], batch['index'])
  x_q, x_k = augment.two_views(jnp.asarray(batch['x']), keys, config.augment)
  m = config.pretrain.momentum
  key_params = jax.tree.map(
    lambda k, q: m * k + (1 - m) * q, state['key_params'], state['params']
  )
  k_out = nnx.merge(graphdef, key_params, state['key_batch_stats'], copy=True)(
    x_k, train=True
  )
  q_out = nnx.merge(graphdef, state['params'], state['batch_stats'], copy=True)(
    x_q, train=True
  )
  return jax.device_get(q_out), jax.device_get(k_out)


def _np_info_nce(pos, neg, t):
  logits = np.concatenate([pos[..., None], neg], -1).astype(np.float64) / t
  m = logits.max(-1, keepdims=True)
  lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
  return float(np.mean(lse - logits[..., 0]))


def test_loss_and_queues_match_reference(runs):
  config, (graphdef, before, after, metrics) = runs
  q, k = _reference(config, graphdef, before)
  t = config.pretrain.temperature
  want = _np_info_nce(
    (q['global'] * k['global']).sum(-1), q['global'] @ before['queue'].T, t
  )
  np.testing.assert_allclose(metrics['loss_global'], want, rtol=1e-4, atol=1e-6)
  # All B keys of the global batch are enqueued at pointer 0, in batch order.
  np.testing.assert_allclose(
    after['queue'][:B], k['global'], rtol=1e-4, atol=1e-5
  )
  np.testing.assert_array_equal(after['queue'][B:], before['queue'][B:])
  assert int(after['queue_ptr']) == B
  if config.pretrain.snippet_weight > 0:
    fq = q['snippet_feats'] / np.linalg.norm(
      q['snippet_feats'], axis=-1, keepdims=True
    )
    fk = k['snippet_feats'] / np.linalg.norm(
      k['snippet_feats'], axis=-1, keepdims=True
    )
    match = np.argmax(np.einsum('nsc,ntc->nst', fq, fk), -1)
    k_pos = np.take_along_axis(k['snippets'], match[..., None], 1)
    want_snip = _np_info_nce(
      (q['snippets'] * k_pos).sum(-1),
      q['snippets'] @ before['snippet_queue'].T,
      t,
    )
    np.testing.assert_allclose(
      metrics['loss_snippet'], want_snip, rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
      metrics['loss'],
      want + config.pretrain.snippet_weight * want_snip,
      rtol=1e-4,
      atol=1e-6,
    )
    mean = k['snippets'].mean(1)
    mean /= np.linalg.norm(mean, axis=-1, keepdims=True)
    np.testing.assert_allclose(
      after['snippet_queue'][:B], mean, rtol=1e-4, atol=1e-5
    )
    assert int(after['snippet_queue_ptr']) == B
  else:
    # The video-level baseline leaves the snippet queue untouched.
    assert 'loss_snippet' not in metrics
    np.testing.assert_array_equal(
      after['snippet_queue'], before['snippet_queue']
    )
  # The momentum update is checked in test_momentum_update_of_key_encoder
  # (here the key encoder starts as a copy of the query: any m fits).


def test_momentum_update_of_key_encoder():
  """MoCo: k <- m k + (1 - m) q, from a key encoder that differs from the
  query one (at init they are equal and m k0 + (1 - m) q0 == q0 for every
  m). Guards against a wrong or hard-coded momentum (m = 0.3 passed)."""
  config = _config(1.5)

  def perturb(state):
    rng = np.random.default_rng(0)
    state['key_params'] = jax.tree.map(
      lambda k: k + jnp.asarray(0.1 * rng.normal(size=k.shape), k.dtype),
      state['key_params'],
    )
    return state

  # One device, the same shapes as test_eight_devices_match_one's reference:
  # the compiled step comes from the compilation cache.
  _, before, after, _ = step_helpers.run_step(
    config, train_utils.make_mesh(jax.devices()[:1]), prepare=perturb
  )
  after = jax.device_get(after)
  m = float(config.pretrain.momentum)
  flat = lambda tree: [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
  for new, k0, q0 in zip(
    flat(after['key_params']),
    flat(before['key_params']),
    flat(before['params']),
  ):
    assert np.abs(k0 - q0).max() > 0.01
    # The move itself (about 1e-4), up to a few float32 ulps of the weights
    # (about 1e-8): any other m is far off.
    ulps = 4 * np.finfo(np.float32).eps * np.abs(k0).max()
    np.testing.assert_allclose(
      new - k0, (1 - m) * (q0 - k0), rtol=1e-3, atol=ulps
    )


def test_in_batch_negatives_step_matches_across_device_counts():
  config = _config(1.5)
  config.pretrain.negatives = 'in_batch'
  _, before, s8, m8 = _run_step(config, jax.devices()[:8])
  _, _, s1, m1 = _run_step(config, jax.devices()[:1])
  for k in ('loss', 'loss_global', 'loss_snippet'):
    np.testing.assert_allclose(m8[k], m1[k], rtol=2e-5, err_msg=k)
  # No queue in this mode: both queues and pointers stay as initialised.
  np.testing.assert_array_equal(s8['queue'], before['queue'])
  np.testing.assert_array_equal(s8['snippet_queue'], before['snippet_queue'])
  assert int(s8['queue_ptr']) == 0


# ---------------------------------------------------------------------------
# AimCLR and RVTCLR bases (+ snippet loss), with nearest-neighbour mining on
# from the first step so the mined-positive paths are covered too.
# ---------------------------------------------------------------------------
_BASE_RUNS = {}


def _base_run(base):
  if base not in _BASE_RUNS:
    config = _config(1.5, base)
    _BASE_RUNS[base] = (
      config,
      _run_step(config, jax.devices()[:8], mining_step=0),
    )
  return _BASE_RUNS[base]


@_base_group
@pytest.mark.parametrize('base', ['aimclr', 'rvtclr'])
def test_base_eight_devices_match_one(base):
  config, (_, before, s8, m8) = _base_run(base)
  _, _, s1, m1 = _run_step(config, jax.devices()[:1], mining_step=0)
  assert m8['mining'] == 1.0
  _assert_same_step(before, s1, m1, s8, m8)


def _np_log_softmax(pos, neg, t):
  logits = np.concatenate([pos[..., None], neg], -1).astype(np.float64) / t
  m = logits.max(-1, keepdims=True)
  return logits - (np.log(np.exp(logits - m).sum(-1, keepdims=True)) + m)


def _np_nce_mined(pos, neg, t, topk_sets):
  """Multi-positive InfoNCE; positives: index 0 + the union of the top-k
  indices (a one-hot scatter, as the release builds its mask) of each array."""
  mask = np.zeros(neg.shape, bool)
  for arr, k in topk_sets:
    idx = np.argsort(-arr, axis=-1)[..., :k]
    np.put_along_axis(mask, idx, True, axis=-1)
  mask = np.concatenate([np.ones(pos.shape + (1,), bool), mask], -1)
  logp = _np_log_softmax(pos, neg, t)
  return float(np.mean(-(logp * mask).sum(-1) / mask.sum(-1)))


def _np_soft(pos, neg, tpos, tneg, t):
  target = np.exp(_np_log_softmax(tpos, tneg, t))
  return float(np.mean(-(target * _np_log_softmax(pos, neg, t)).sum(-1)))


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@_base_group
@pytest.mark.parametrize('base', ['aimclr', 'rvtclr'])
def test_base_losses_and_queues_match_reference(base):
  config, (graphdef, before, after, metrics) = _base_run(base)
  p = config.pretrain
  t = p.temperature
  state = jax.tree.map(jnp.asarray, before)
  batch = jax.tree.map(jnp.asarray, _batch(config.data.clip_len))
  keys = augment.sample_keys(state['rng'], state['step'], batch['index'])
  views, _ = pretrain.make_views(batch, keys, config)
  m = p.momentum
  key_params = jax.tree.map(
    lambda k, q: m * k + (1 - m) * q, state['key_params'], state['params']
  )
  kmodel = nnx.merge(graphdef, key_params, state['key_batch_stats'], copy=True)
  qmodel = nnx.merge(graphdef, state['params'], state['batch_stats'], copy=True)
  get = jax.device_get
  k = get(kmodel(views['k'], train=True))
  q = get(qmodel(views['q'], train=True))
  queue, squeue = before['queue'], before['snippet_queue']
  pos, neg = (q['global'] * k['global']).sum(-1), q['global'] @ queue.T
  if base == 'aimclr':
    e = get(qmodel(views['extreme'], train=True, mode='eadm'))
    pos_e, neg_e = (e['global'] * k['global']).sum(-1), e['global'] @ queue.T
    pos_d = (e['global_drop'] * k['global']).sum(-1)
    neg_d = e['global_drop'] @ queue.T
    want = {
      'loss_global': _np_nce_mined(
        pos, neg, t, [(neg, 1), (neg_e, 1), (neg_d, 1)]
      ),
      'loss_ddm': 0.5
      * (
        _np_soft(pos_e, neg_e, pos, neg, t)
        + _np_soft(pos_d, neg_d, pos, neg, t)
      ),
    }
    enq = k
  else:
    other = get(kmodel(views['k_other'], train=True))
    dc = get(qmodel(views['dc'], train=True, mode='dc'))
    pos_dc, neg_dc = (
      (dc['global'] * k['global']).sum(-1),
      dc['global'] @ queue.T,
    )
    mined = [(neg, 1), (neg_dc, 1)]
    rank = (
      (q['tempo'] * k['tempo']).sum(-1) - (q['tempo'] * other['tempo']).sum(-1)
    ) / t
    want = {
      'loss_global': _np_nce_mined(pos, neg, t, mined),
      'loss_cross_tempo': _np_nce_mined(
        (q['global'] * other['global']).sum(-1), neg, t, mined
      ),
      'loss_tempo_rank': float(np.mean(np.maximum(0, p.tempo_margin - rank))),
      'loss_ddm': _np_soft(pos_dc, neg_dc, pos, neg, t),
    }
    enq = other
  # Snippets: argmax matching to the enqueued key view, queue-2 negatives,
  # top-5 mined positives.
  match = np.argmax(
    np.einsum(
      'nsc,ntc->nst', _unit(q['snippet_feats']), _unit(enq['snippet_feats'])
    ),
    -1,
  )
  k_pos = np.take_along_axis(enq['snippets'], match[..., None], 1)
  s_neg = q['snippets'] @ squeue.T
  want['loss_snippet'] = _np_nce_mined(
    (q['snippets'] * k_pos).sum(-1), s_neg, t, [(s_neg, p.snippet_mining_topk)]
  )
  for name, value in want.items():
    np.testing.assert_allclose(
      metrics[name], value, rtol=1e-4, atol=1e-6, err_msg=name
    )
  total = sum(v for n, v in want.items() if n != 'loss_snippet')
  np.testing.assert_allclose(
    metrics['loss'], total + p.snippet_weight * want['loss_snippet'], rtol=1e-4
  )
  # The enqueued key view fills both queues at pointer 0, in batch order.
  np.testing.assert_allclose(
    after['queue'][:B], enq['global'], rtol=1e-4, atol=1e-5
  )
  np.testing.assert_allclose(
    after['snippet_queue'][:B],
    _unit(enq['snippets'].mean(1)),
    rtol=1e-4,
    atol=1e-5,
  )
  np.testing.assert_array_equal(after['queue'][B:], before['queue'][B:])


def test_bfloat16_compute_keeps_float32_params():
  config, (_, before, _, m32) = _eight_device_run(1.5)
  config = config.copy_and_resolve_references()
  config.pretrain.compute_dtype = 'bfloat16'
  # One device (a cheaper compile): losses do not depend on the device count.
  _, _, after, m16 = _run_step(config, jax.devices()[:1])
  for leaf in (
    jax.tree.leaves(after['params'])
    + jax.tree.leaves(after['key_params'])
    + jax.tree.leaves(after['batch_stats'])
  ):
    assert leaf.dtype == np.float32
  assert after['queue'].dtype == np.float32
  # bf16 has 8 mantissa bits: the losses agree to about 1e-2.
  for k in ('loss_global', 'loss_snippet'):
    np.testing.assert_allclose(m16[k], m32[k], rtol=3e-2, err_msg=k)


def _np_geometric_match(f_q, f_k, s):
  """Content-correct key snippet from the frame maps, written from the
  definition: snippet i averages frames [i T / S, (i + 1) T / S)."""
  t = f_q.shape[1]
  bins = [(i * t // s, -(-(i + 1) * t // s)) for i in range(s)]
  c_q = np.stack([f_q[:, a:b].mean(1) for a, b in bins], 1)
  c_k = np.stack([f_k[:, a:b].mean(1) for a, b in bins], 1)
  index = np.abs(c_q[:, :, None] - c_k[:, None, :]).argmin(-1)
  valid = (c_q >= f_k.min(1, keepdims=True)) & (
    c_q <= f_k.max(1, keepdims=True)
  )
  return index, valid


def test_position_proof_snippet_step_matches_reference():
  """snippet_positive='geometry', snippet_negatives='snippets': the loss over
  the valid query snippets with the key snippet showing the same frames, the
  queue's snippets as negatives, and every key snippet enqueued."""
  config = _config(1.5)
  config.pretrain.snippet_positive = 'geometry'
  config.pretrain.snippet_negatives = 'snippets'
  s = config.model.num_snippets
  config.pretrain.snippet_queue_size = 2 * B * s
  graphdef, before, after, metrics = _run_step(config, jax.devices()[:8])
  q, k = _reference(config, graphdef, before)
  batch = _batch()
  keys = augment.sample_keys(
    jnp.asarray(before['rng']), before['step'], batch['index']
  )
  f_q, f_k = (
    np.asarray(f)
    for f in augment.two_view_frames(batch['x'].shape[2], keys, config.augment)
  )
  index, valid = _np_geometric_match(f_q, f_k, s)
  assert valid.any()
  k_pos = np.take_along_axis(k['snippets'], index[..., None], 1)
  pos = (q['snippets'] * k_pos).sum(-1)
  neg = q['snippets'] @ before['snippet_queue'].T
  t = config.pretrain.temperature
  logits = np.concatenate([pos[..., None], neg], -1).astype(np.float64) / t
  per = np.log(np.exp(logits).sum(-1)) - logits[..., 0]
  want = per[valid].mean()
  np.testing.assert_allclose(metrics['loss_snippet'], want, rtol=1e-4)
  # Every key snippet (B x S of them) enters the snippet queue, in order.
  np.testing.assert_allclose(
    after['snippet_queue'][: B * s],
    k['snippets'].reshape(B * s, -1),
    rtol=1e-4,
    atol=1e-5,
  )
  assert int(after['snippet_queue_ptr']) == B * s
  # The argmax diagnostics against the same references.
  fq = q['snippet_feats'] / np.linalg.norm(
    q['snippet_feats'], axis=-1, keepdims=True
  )
  fk = k['snippet_feats'] / np.linalg.norm(
    k['snippet_feats'], axis=-1, keepdims=True
  )
  argmax = np.argmax(np.einsum('nsc,ntc->nst', fq, fk), -1)
  np.testing.assert_allclose(
    metrics['diag/snippet_same_index'],
    np.mean(argmax == np.arange(s)),
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    metrics['diag/snippet_content_correct'],
    ((argmax == index) & valid).sum() / valid.sum(),
    rtol=1e-6,
  )
