"""Localization protocols: which parameters and BatchNorm statistics each one
trains (issue 10 item 5). ``linear`` is the released probe (only the per-frame
classifier ``fc_loc`` trains); ``linear_fusion`` also trains the fusion module.
"""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from skel_jax import config_defaults
from skel_jax import finetune
from skel_jax import optim
from skel_jax import protocols

NUM_CLASSES = 3
T = 16
CLASSIFIER = {('head', 'classifier', 'kernel'), ('head', 'classifier', 'bias')}


def _config(protocol, head='ufusion'):
  c = config_defaults.finetune_config()
  config_defaults.make_finetune_smoke(c)
  c.model.head_dim = 8
  c.model.head = head
  c.protocol = protocol
  c.init = 'random'
  c.optimizer.lr = 1e-2
  return c


def _paths(tree):
  return {tuple(p) for p, _ in nnx.to_flat_state(tree)}


@pytest.mark.parametrize('head', ['ufusion', 'upsample'])
def test_trainable_tree_per_protocol(head):
  cfg = _config('finetune', head)
  model = nnx.eval_shape(lambda: finetune.build_model(cfg, NUM_CLASSES))
  _, params, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
  every = _paths(params)
  head_paths = {p for p in every if p[0] == 'head'}
  if head == 'upsample':  # the baseline head is one linear layer
    assert head_paths == CLASSIFIER
  else:
    assert {p[1] for p in head_paths} == {
      'cu01',
      'cu11',
      'cu02',
      'fuse',
      'classifier',
    }
  want = {
    'finetune': every,
    'linear': CLASSIFIER,
    'knn': CLASSIFIER,
    'linear_fusion': head_paths,
  }
  assert set(want) == set(protocols.PROTOCOLS)
  for protocol, trained in want.items():
    trainable, frozen = finetune.split_trainable(params, protocol)
    assert _paths(trainable) == trained, protocol
    if protocol == 'finetune':
      assert frozen is None
    else:
      assert _paths(frozen) == every - trained, protocol
    joined = finetune.join_params(trainable, frozen, protocol)
    assert jax.tree.structure(joined) == jax.tree.structure(params)


def _one_step(protocol, head):
  """(before, after) as {'params', 'stats'} flat dicts, and the optimizer
  state's parameter count, after one jitted ``finetune.train_step``."""
  cfg = _config(protocol, head)
  schedule = optim.warmup_step_schedule(cfg.optimizer.lr, 0, [])
  tx = optim.make_optimizer(cfg.optimizer, schedule)
  graphdef, state = finetune.initial_state(
    cfg, tx, NUM_CLASSES, restore_backbone=False
  )
  rng = np.random.default_rng(0)
  batch = {
    'x': rng.normal(size=(2, 1, T, 25, 3)).astype(np.float32),
    'labels': rng.integers(0, NUM_CLASSES + 1, (2, T)).astype(np.int32),
  }
  step = jax.jit(
    functools.partial(
      finetune.train_step,
      graphdef=graphdef,
      tx=tx,
      protocol=protocol,
      schedule=schedule,
    )
  )
  new, _ = step(state, batch)

  def flat(s):
    s = jax.device_get(s)
    params = finetune.join_params(s['trainable'], s['frozen'], protocol)
    return {
      'params': {p: np.asarray(v) for p, v in nnx.to_flat_state(params)},
      'stats': {
        p: np.asarray(v) for p, v in nnx.to_flat_state(s['batch_stats'])
      },
    }

  opt_size = sum(
    np.size(l) for l in jax.tree.leaves(new['opt_state']) if np.ndim(l) > 0
  )
  return flat(state), flat(new), opt_size


def _changed(before, after, kind):
  return {
    p
    for p in before[kind]
    if not np.array_equal(before[kind][p], after[kind][p])
  }


@pytest.mark.parametrize(
  'protocol,head',
  [('linear', 'ufusion'), ('linear_fusion', 'ufusion'), ('linear', 'upsample')],
)
def test_probe_step_trains_only_its_subtree(protocol, head):
  before, after, opt_size = _one_step(protocol, head)
  changed = _changed(before, after, 'params')
  changed_stats = _changed(before, after, 'stats')
  head_paths = {p for p in before['params'] if p[0] == 'head'}
  if protocol == 'linear':
    # Only fc_loc moves; backbone and fusion BNs stay in inference mode.
    assert changed == CLASSIFIER
    assert not changed_stats
    trained = CLASSIFIER
  else:
    # The fusion module trains (and its BNs see the batch); the backbone and
    # its statistics do not. (Biases feeding a BN have a zero true gradient,
    # so only kernels and scales are sure to move.)
    assert changed <= head_paths
    assert {p for p in head_paths if p[-1] in ('kernel', 'scale')} <= changed
    assert changed_stats and all(p[0] == 'head' for p in changed_stats)
    assert {p[1] for p in changed_stats} == {'cu01', 'cu11', 'cu02'}
    trained = head_paths
  # Adam's two moments cover the trained parameters only.
  assert opt_size == 2 * sum(before['params'][p].size for p in trained)
