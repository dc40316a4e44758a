"""Optional 'fsdp' mesh axis: parameter/optimizer-state sharding.

The sharded step must compute what the pure data-parallel step computes; the
layout only changes where the weights live. At most two compilations of the
pretraining step (1-D and 2-D mesh, 8 devices each).
"""

import functools

import jax
import numpy as np
import pytest
import step_helpers
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from skel_jax import checkpoint
from skel_jax import config_validation
from skel_jax import train_utils

MIN_SIZE = 64  # small enough that the tiny model's kernels get sharded
_config = step_helpers.tiny_config


def _fake_state():
  return {
    'step': np.zeros((), np.int32),
    'params': {
      'big': np.ones((64, 48, 2), np.float32),
      'small': np.ones((8,), np.float32),
      'odd': np.ones((129, 129), np.float32),
    },
    'key_params': {'big': np.ones((64, 48, 2), np.float32)},
    'batch_stats': {'mean': np.ones((4096,), np.float32)},
    'opt_state': ({'big': np.ones((64, 48, 2), np.float32)}, ()),
    'queue': np.ones((4096, 128), np.float32),
    'snippet_queue': np.ones((4096, 128), np.float32),
    'rng': np.zeros((2,), np.uint32),
  }


def test_mesh_shapes_and_data_sharding():
  devices = jax.devices()[:8]
  m1 = train_utils.make_mesh(devices)
  assert m1.axis_names == ('data',) and m1.devices.shape == (8,)
  assert train_utils.data_sharding(m1).spec == P('data')
  m2 = train_utils.make_mesh(devices, fsdp=2)
  assert m2.axis_names == ('data', 'fsdp') and m2.devices.shape == (4, 2)
  assert train_utils.data_sharding(m2).spec == P(('data', 'fsdp'))
  with pytest.raises(ValueError, match='fsdp=3'):
    train_utils.make_mesh(devices, fsdp=3)


def test_state_shardings_shards_large_params_keeps_queues_replicated():
  state = _fake_state()
  mesh = train_utils.make_mesh(jax.devices()[:8], fsdp=4)
  sh = train_utils.state_shardings(state, mesh, min_size=2**12)
  assert jax.tree.structure(sh) == jax.tree.structure(state)
  # (64, 48, 2): 64 and 48 divide by 4, 64 is the largest -> dim 0.
  for s in (
    sh['params']['big'],
    sh['key_params']['big'],
    sh['opt_state'][0]['big'],
  ):
    assert s.spec == P('fsdp')
  for s in (
    sh['params']['small'],
    sh['params']['odd'],
    sh['queue'],
    sh['snippet_queue'],
    sh['batch_stats']['mean'],
    sh['step'],
    sh['rng'],
  ):
    assert s.spec == P(), s
  # Ties go to the last such dim.
  tie = train_utils.state_shardings(
    {'params': np.ones((8, 8))}, mesh, min_size=1
  )
  assert tie['params'].spec == P(None, 'fsdp')
  # 1-D mesh: everything replicated.
  sh1 = train_utils.state_shardings(
    state, train_utils.make_mesh(jax.devices()[:8]), min_size=1
  )
  assert all(s.spec == P() for s in jax.tree.leaves(sh1))


def test_config_fsdp_validated():
  c = _config()
  assert c.fsdp == 1
  config_validation._check_run(c, '', 8)  # pylint: disable=protected-access
  c.num_devices = 8
  c.fsdp = 3
  with pytest.raises(config_validation.ConfigError, match=r'config\.fsdp=3'):
    config_validation._check_run(c, '', 8)  # pylint: disable=protected-access
  c.fsdp = 0
  with pytest.raises(config_validation.ConfigError, match=r'config\.fsdp=0'):
    config_validation._check_run(c, '', 8)  # pylint: disable=protected-access
  c.fsdp = 2
  assert train_utils.mesh_for(c).devices.shape == (4, 2)


def test_fsdp_step_matches_data_parallel_step():
  config = _config()
  devices = jax.devices()[:8]
  _, before, s_dp, m_dp = step_helpers.run_step(
    config, train_utils.make_mesh(devices)
  )
  _, _, s_fs, m_fs = step_helpers.run_step(
    config,
    train_utils.make_mesh(devices, fsdp=2),
    functools.partial(train_utils.state_shardings, min_size=MIN_SIZE),
  )
  sharded = [
    x for x in jax.tree.leaves(s_fs['params']) if 'fsdp' in str(x.sharding.spec)
  ]
  assert sharded, 'no parameter ended up sharded over fsdp'
  assert all(
    'fsdp' not in str(s_fs[k].sharding.spec) for k in ('queue', 'snippet_queue')
  )
  assert set(m_fs) == set(m_dp)
  step_helpers.assert_same_step(
    before,
    jax.device_get(s_dp),
    m_dp,
    jax.device_get(s_fs),
    m_fs,
    trees=('params', 'key_params'),
  )


def test_abstract_like_sharding_tree_roundtrips_through_orbax(tmp_path):
  mesh = train_utils.make_mesh(jax.devices()[:8], fsdp=2)
  rng = np.random.default_rng(1)
  state = {
    'step': np.array(3, np.int32),
    'params': {
      'w': rng.normal(size=(16, 6)).astype(np.float32),
      'b': rng.normal(size=(6,)).astype(np.float32),
    },
    'queue': rng.normal(size=(8, 4)).astype(np.float32),
  }
  sh = train_utils.state_shardings(state, mesh, min_size=32)
  assert sh['params']['w'].spec == P('fsdp')
  # Save from a replicated layout, restore onto the fsdp layout.
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'ckpt'))
  ckpt.save(3, jax.device_put(state, train_utils.replicated(mesh)), force=True)
  ckpt.close()
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'ckpt'))
  abstract = checkpoint.abstract_like(state, sh)
  assert abstract['params']['w'].sharding == sh['params']['w']
  restored = ckpt.restore(abstract)
  ckpt.close()
  for r, s, want in zip(
    jax.tree.leaves(restored), jax.tree.leaves(sh), jax.tree.leaves(state)
  ):
    assert r.sharding.is_equivalent_to(s, np.ndim(want))
    np.testing.assert_array_equal(np.asarray(r), want)
  # One sharding for all leaves still works (existing callers).
  one = checkpoint.abstract_like(state, train_utils.replicated(mesh))
  assert all(
    isinstance(a.sharding, NamedSharding) and a.sharding.spec == P()
    for a in jax.tree.leaves(one)
  )
