"""Global-array losses vs their shard_map twins (tests/loss_oracles.py:
explicit all_gather/pmean) on 8 devices, and the in-batch mode against a
NumPy loop."""

import jax
import jax.numpy as jnp
import loss_oracles
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from skel_jax import losses
from skel_jax import train_utils

N, S, D, C, K = 16, 4, 8, 6, 32
T = 0.2


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope='module')
def arrays():
  rng = np.random.default_rng(0)
  return dict(
    q=_unit(rng.normal(size=(N, D))),
    k=_unit(rng.normal(size=(N, D))),
    q_snip=_unit(rng.normal(size=(N, S, D))),
    k_snip=_unit(rng.normal(size=(N, S, D))),
    feats_q=rng.normal(size=(N, S, C)).astype(np.float32),
    feats_k=rng.normal(size=(N, S, C)).astype(np.float32),
    queue=_unit(rng.normal(size=(K, D))),
    squeue=_unit(rng.normal(size=(K, D))),
  )


def _sharded(a, mesh):
  data = NamedSharding(mesh, P('data'))
  rep = NamedSharding(mesh, P())
  out = {
    k: jax.device_put(v, rep if 'queue' in k else data) for k, v in a.items()
  }
  return out


@pytest.mark.parametrize('mining', [0, 2], ids=['plain', 'mined'])
@pytest.mark.parametrize('negatives', ['queue', 'in_batch'])
def test_global_arrays_match_shard_map(arrays, negatives, mining):
  mesh = train_utils.make_mesh(jax.devices()[:8])
  a = _sharded(arrays, mesh)
  oracle = loss_oracles.sharded_losses(
    mesh, negatives, T, mining_topk=mining, snippet_mining_topk=mining
  )
  want_g, want_s = oracle(
    a['q'],
    a['k'],
    a['q_snip'],
    a['k_snip'],
    a['feats_q'],
    a['feats_k'],
    a['queue'],
    a['squeue'],
  )

  @jax.jit
  def global_view(a):
    in_batch = negatives == 'in_batch'
    bank = a['k'] if in_batch else a['queue']
    s_bank = a['k_snip'].reshape(-1, D) if in_batch else a['squeue']
    pos, neg = losses.global_logits(a['q'], a['k'], bank, in_batch)
    match = losses.snippet_correspondence(a['feats_q'], a['feats_k'])
    s_pos, s_neg = losses.snippet_logits(
      a['q_snip'], a['k_snip'], match, s_bank, in_batch
    )
    extra = lambda n: losses.topk_mask(n, mining) if mining else None
    return (
      losses.info_nce(pos, neg, T, extra(neg)),
      losses.info_nce(s_pos, s_neg, T, extra(s_neg)),
    )

  got_g, got_s = global_view(a)
  np.testing.assert_allclose(got_g, want_g, rtol=1e-5)
  np.testing.assert_allclose(got_s, want_s, rtol=1e-5)
  if not mining:  # the named wrappers are the same computation
    snip = (a['q_snip'], a['k_snip'], a['feats_q'], a['feats_k'])
    if negatives == 'queue':
      wrapped = (
        loss_oracles.global_moco_loss(a['q'], a['k'], a['queue'], T),
        loss_oracles.snippet_loss(*snip, a['squeue'], T)[0],
      )
    else:
      wrapped = (
        loss_oracles.in_batch_global_loss(a['q'], a['k'], T),
        loss_oracles.in_batch_snippet_loss(*snip, T)[0],
      )
    np.testing.assert_allclose(wrapped, (want_g, want_s), rtol=1e-5)


def test_in_batch_snippet_loss_matches_numpy_loop(arrays):
  a = arrays
  total = 0.0
  for n in range(N):
    for i in range(S):
      fq = a['feats_q'][n, i] / np.linalg.norm(a['feats_q'][n, i])
      fk = a['feats_k'][n] / np.linalg.norm(
        a['feats_k'][n], axis=-1, keepdims=True
      )
      j = int(np.argmax(fk @ fq))
      pos = a['q_snip'][n, i] @ a['k_snip'][n, j]
      others = np.concatenate([a['k_snip'][m] for m in range(N) if m != n])
      logits = np.concatenate([[pos], others @ a['q_snip'][n, i]]) / T
      total += (
        np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[0]
      )
  want = total / (N * S)
  got, _ = loss_oracles.in_batch_snippet_loss(
    *(jnp.asarray(a[k]) for k in ('q_snip', 'k_snip', 'feats_q', 'feats_k')), T
  )
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_in_batch_global_loss_matches_numpy(arrays):
  a = arrays
  logits = a['q'] @ a['k'].T / T
  m = logits.max(-1, keepdims=True)
  want = np.mean(np.log(np.exp(logits - m).sum(-1)) + m[:, 0] - np.diag(logits))
  got = loss_oracles.in_batch_global_loss(
    jnp.asarray(a['q']), jnp.asarray(a['k']), T
  )
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
