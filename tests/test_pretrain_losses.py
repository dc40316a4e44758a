"""Pieces of the pretraining step without a model: ``compute_losses`` on
hand-made encoder outputs (the mining switch, the in-batch bank) against
NumPy loops, and ``make_views``' wiring rebuilt from the augmentations."""

import jax.numpy as jnp
import numpy as np
import pytest

from skel_jax import config_defaults
from skel_jax import pretrain

N, D, K, TOPK = 6, 5, 10, 2
T = 0.5


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _np_loss(pos, negs, topk):
  """Mean over queries of -mean_{p in P} log softmax_p([pos] + negs), P =
  the positive plus (when topk) the topk most similar negatives."""
  out = []
  for p, neg in zip(pos, negs):
    logits = np.concatenate([[p], neg]).astype(np.float64) / T
    lse = np.log(np.exp(logits - logits.max()).sum()) + logits.max()
    chosen = [logits[0]]
    if topk:
      chosen += list(np.sort(logits[1:])[::-1][:topk])
    out.append(lse - np.mean(chosen))
  return float(np.mean(out))


@pytest.mark.parametrize('negatives', ['queue', 'in_batch'])
@pytest.mark.parametrize('mining', [False, True], ids=['off', 'on'])
def test_global_loss_mines_only_when_switched_on(negatives, mining):
  """Guards against the ``& mining`` gate being dropped (mined positives
  before the mining epoch) and checks the in-batch bank: the other videos'
  keys, the query's own excluded."""
  c = config_defaults.pretrain_config()
  config_defaults.set_base(c, 'skeletonclr')
  p = c.pretrain
  p.snippet_weight = 0.0
  p.mining_epoch = 0  # mining configured: the traced switch decides
  p.mining_topk = TOPK
  p.temperature = T
  p.negatives = negatives
  rng = np.random.default_rng(0)
  q, k = _unit(rng.normal(size=(N, D))), _unit(rng.normal(size=(N, D)))
  queue = _unit(rng.normal(size=(K, D)))
  state = {
    'step': jnp.asarray(0),
    'queue': jnp.asarray(queue),
    'snippet_queue': jnp.asarray(queue),
  }
  total, metrics = pretrain.compute_losses(
    {'q': {'global': jnp.asarray(q)}},
    {'k': {'global': jnp.asarray(k)}},
    state,
    p,
    jnp.asarray(mining),
    None,
  )
  pos = (q * k).sum(-1)
  if negatives == 'queue':
    negs = [queue @ qi for qi in q]
  else:
    negs = [
      np.array([qi @ k[m] for m in range(N) if m != n])
      for n, qi in enumerate(q)
    ]
  want = _np_loss(pos, negs, TOPK if mining else 0)
  np.testing.assert_allclose(float(metrics['loss_global']), want, rtol=1e-5)
  np.testing.assert_allclose(float(total), want, rtol=1e-5)
  # The two settings really differ here, so the gate is observable.
  assert abs(_np_loss(pos, negs, TOPK) - _np_loss(pos, negs, 0)) > 0.1


@pytest.mark.parametrize('base', ['skeletonclr', 'aimclr', 'rvtclr'])
def test_make_views_wiring_per_sample(base):
  """Each view rebuilt per sample from the augmentation primitives: guards
  against swapped roles (strong key view, k_other taken from the query, the
  third view sharing the query's key, frame maps of another view)."""
  import jax  # pylint: disable=g-import-not-at-top

  from skel_jax import augment  # pylint: disable=g-import-not-at-top

  c = config_defaults.pretrain_config()
  config_defaults.set_base(c, base)
  cfg, t = c.augment, 24
  x = np.random.default_rng(1).normal(size=(2, 1, t, 25, 3)).astype(np.float32)
  keys = augment.sample_keys(jax.random.PRNGKey(4), 7, jnp.arange(2))
  views, frames = pretrain.make_views({'x': jnp.asarray(x)}, keys, c)
  want_names = {
    'skeletonclr': {'q', 'k'},
    'aimclr': {'q', 'k', 'extreme'},
    'rvtclr': {'q', 'k', 'k_other', 'dc'},
  }[base]
  assert set(views) == want_names
  for i in range(2):
    kq, kk = jax.random.split(keys[i])
    third = jax.random.fold_in(keys[i], 2)
    want = {
      'q': augment.augment(x[i], kq, cfg, strong=cfg.query_strong),
      'k': augment.augment(x[i], kk, cfg, strong=False),
    }
    f = {
      'q': augment.view_frames(t, kq, cfg),
      'k': augment.view_frames(t, kk, cfg),
    }
    if base == 'aimclr':
      want['extreme'] = augment.extreme(x[i], third, cfg)
    if base == 'rvtclr':
      want['dc'] = augment.augment(x[i], third, cfg, strong=False)
      fast = bool(jax.random.bernoulli(jax.random.fold_in(keys[i], 3)))
      half = np.arange(t // 2)
      same, other = (2 * half, half) if fast else (half, 2 * half)
      want['k_other'] = want['k'][:, other]
      f['k_other'] = f['k'][other]
      for name in ('q', 'k'):
        want[name], f[name] = want[name][:, same], f[name][same]
    for name, v in want.items():
      np.testing.assert_allclose(
        views[name][i], v, rtol=1e-5, atol=1e-5, err_msg=name
      )
    assert set(frames) == set(f)
    for name, v in f.items():
      np.testing.assert_array_equal(frames[name][i], v, err_msg=name)
