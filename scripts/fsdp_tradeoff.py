"""Per-device memory of the pretraining state vs the size of the 'fsdp' axis.

Runs on 8 simulated CPU devices and only looks at shardings (no compile, no
training): for the AGCN pretraining state at width 1.0 it prints, for fsdp in
(1, 2, 4, 8), the bytes one device holds of params + key_params + opt_state
(from each sharding's shard shape) and of the whole state.

  .venv/bin/python scripts/fsdp_tradeoff.py
"""

import os

os.environ.setdefault('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=8'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)

import numpy as np  # noqa: E402

from skel_jax import config_defaults  # noqa: E402
from skel_jax import optim  # noqa: E402
from skel_jax import pretrain  # noqa: E402
from skel_jax import train_utils  # noqa: E402

SHARDABLE = train_utils.FSDP_STATE_KEYS


def _per_device_bytes(state, shardings, keys=None):
  total = 0
  for k in state:
    if keys is not None and k not in keys:
      continue
    for x, s in zip(jax.tree.leaves(state[k]), jax.tree.leaves(shardings[k])):
      total += int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
  return total


def main():
  config = config_defaults.pretrain_config()
  config.model.backbone.width = 1.0
  schedule = optim.warmup_step_schedule(config.optimizer.lr, 0, [])
  tx = optim.make_optimizer(config.optimizer, schedule)
  # Shapes only: the state is never materialised.
  state = jax.eval_shape(lambda: pretrain.init_state(config, tx)[1])
  n_params = sum(
    int(np.prod(x.shape)) for x in jax.tree.leaves(state['params'])
  )
  devices = jax.devices()[:8]
  mib = 2.0**20
  print(
    f'AGCN width {config.model.backbone.width}, optimizer '
    f'{config.optimizer.name}, {len(devices)} devices, '
    f'state_shardings min_size=2**14'
  )
  print(
    f'parameters: {n_params:,} ({n_params * 4 / mib:.2f} MiB float32); '
    f'queues: 2 x {config.pretrain.queue_size} x '
    f'{config.model.feature_dim} (replicated)'
  )
  print(
    f'{"fsdp":>4} {"mesh":>8} {"params+key+opt MiB/dev":>23} '
    f'{"vs fsdp=1":>9} {"whole state MiB/dev":>20}'
  )
  base = None
  for fsdp in (1, 2, 4, 8):
    mesh = train_utils.make_mesh(devices, fsdp=fsdp)
    sh = train_utils.state_shardings(state, mesh)
    shardable = _per_device_bytes(state, sh, SHARDABLE)
    whole = _per_device_bytes(state, sh)
    base = base or shardable
    shape = 'x'.join(str(d) for d in mesh.devices.shape)
    print(
      f'{fsdp:>4} {shape:>8} {shardable / mib:>23.2f} '
      f'{shardable / base:>9.3f} {whole / mib:>20.2f}'
    )


if __name__ == '__main__':
  main()
