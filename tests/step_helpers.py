"""Shared by the pretraining-step tests: a tiny config and batch, one jitted
step on a given mesh, and the "same step" comparison of two runs."""

import jax
import numpy as np

from skel_jax import config_defaults
from skel_jax import optim
from skel_jax import pretrain
from skel_jax import train_utils

B = 8


def tiny_config(snippet_weight=1.5, base='skeletonclr'):
  c = config_defaults.pretrain_config()
  config_defaults.set_base(c, base)
  c.model.backbone.width = 0.125
  c.model.num_snippets = 4
  # RVTCLR's tempo views keep half of the clip: 32 frames -> T' = 4 = S.
  c.data.clip_len = 64 if base == 'rvtclr' else 32
  c.pretrain.queue_size = 16
  c.pretrain.snippet_queue_size = 16
  c.pretrain.snippet_weight = snippet_weight
  # A softer temperature keeps the loss (and its gradients) away from ~0 at
  # init, where float32 rounding noise would dominate the comparison.
  c.pretrain.temperature = 0.5
  c.batch_size = B
  return c


def tiny_batch(clip_len=32):
  rng = np.random.default_rng(0)
  x = (0.3 * rng.normal(size=(B, 1, clip_len, 25, 3))).astype(np.float32)
  return {'x': x, 'index': np.arange(100, 100 + B, dtype=np.int32)}


def run_step(config, mesh, state_shardings=None, mining_step=-1, prepare=None):
  """One jitted step as ``pretrain.train`` builds it, on ``mesh``.

  ``state_shardings(state, mesh)`` gives the state layout (default:
  replicated); ``prepare(state)`` edits the initial state (same shapes, so
  the compiled step is shared). Returns (graphdef, state before (host),
  state after (device arrays, with their shardings), metrics (host)).
  """
  schedule = optim.warmup_step_schedule(config.optimizer.lr, 0, [])
  tx = optim.make_optimizer(config.optimizer, schedule)
  graphdef, state = pretrain.init_state(config, tx)
  if prepare is not None:
    state = prepare(state)
  dsh = train_utils.data_sharding(mesh)
  sh = (
    train_utils.replicated(mesh)
    if state_shardings is None
    else state_shardings(state, mesh)
  )
  step = pretrain.make_train_step(
    config,
    graphdef,
    tx,
    schedule,
    mining_step=mining_step,
    mesh=mesh,
    state_shardings=sh,
    donate=False,
  )
  before = jax.device_get(state)
  after, metrics = step(
    jax.device_put(state, sh),
    jax.device_put(tiny_batch(config.data.clip_len), dsh),
  )
  return graphdef, before, after, jax.device_get(metrics)


def assert_same_step(
  before, ref_state, ref_metrics, state, metrics, trees=('params',)
):
  """Equal metrics, parameter updates (<=> equal gradients: same optimizer
  and start) and queues."""
  for k in ref_metrics:
    np.testing.assert_allclose(
      metrics[k], ref_metrics[k], rtol=2e-5, atol=1e-6, err_msg=k
    )
  # Reductions run in another order, so compare each update relative to the
  # largest update of its tensor, plus a floor relative to the largest update
  # overall: a bias feeding BatchNorm has a true gradient of 0 and carries
  # float noise only.
  floor = 1e-6 * max(
    float(np.abs(p1 - p0).max())
    for p0, p1 in zip(
      jax.tree.leaves(before['params']), jax.tree.leaves(ref_state['params'])
    )
  )

  def check(p0, p1, p2):
    u1, u2 = p1 - p0, p2 - p0
    np.testing.assert_allclose(
      u2, u1, rtol=0, atol=3e-3 * np.abs(u1).max() + floor + 5e-7
    )

  for tree in trees:
    jax.tree.map(check, before[tree], ref_state[tree], state[tree])
  for q in ('queue', 'snippet_queue'):
    np.testing.assert_allclose(state[q], ref_state[q], rtol=2e-5, atol=1e-6)
