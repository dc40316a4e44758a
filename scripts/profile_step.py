r"""Where the pretraining step's time goes: views, key forwards, query
forward+backward, and the whole jitted step, timed separately.

  python scripts/profile_step.py --base=aimclr --snippet --backbone=agcn \
      --width=1 --batch=128 --clip_len=300 [--dtype=bfloat16] [--trace_dir=D]

Each part is jitted on its own (so XLA cannot fuse across the cut) and timed
with ``bench.time_calls``; the remainder (optimizer update, queues, momentum
update, non-finite guard) is the full step minus the parts. ``--trace_dir``
also writes a ``jax.profiler`` trace of a few full steps (open it with
TensorBoard's profile plugin or Perfetto).
"""

import argparse
import functools
import json

import jax
import numpy as np
from flax import nnx

from skel_jax import augment
from skel_jax import bases
from skel_jax import bench
from skel_jax import optim
from skel_jax import pretrain
from skel_jax import train_utils


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument(
    '--base', default='skeletonclr', choices=sorted(bases.REGISTRY)
  )
  p.add_argument('--snippet', action='store_true')
  p.add_argument('--backbone', default='agcn', choices=['agcn', 'stgcn'])
  p.add_argument('--width', type=float, default=1.0)
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--clip_len', type=int, default=300)
  p.add_argument('--persons', type=int, default=2)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--trace_dir', default='')
  p.add_argument('--out', default='')
  a = p.parse_args()

  opts = bench.Options(
    width=a.width,
    batch=a.batch,
    clip_len=a.clip_len,
    persons=a.persons,
    dtype=a.dtype,
  )
  method = a.base + ('+snippet' if a.snippet else '')
  cfg = bench.pretrain_config(opts, a.backbone, method)
  mesh = train_utils.make_mesh()
  rep, dsh = train_utils.replicated(mesh), train_utils.data_sharding(mesh)
  schedule, _, _ = optim.epoch_schedule(
    cfg, 100 * cfg.batch_size, drop_last=True
  )
  tx = optim.make_optimizer(cfg.optimizer, schedule)
  graphdef, state = pretrain.init_state(cfg, tx)
  state = jax.device_put(state, rep)
  rng = np.random.default_rng(0)
  batch = jax.device_put(
    {
      'x': bench._skeletons(rng, a.batch, a.persons, a.clip_len),  # pylint: disable=protected-access
      'index': np.arange(a.batch, dtype=np.int32),
    },
    dsh,
  )
  dtype = np.dtype(a.dtype) if a.dtype != 'bfloat16' else jax.numpy.bfloat16
  pcfg = cfg.pretrain

  @jax.jit
  def views_fn(state, batch):
    keys = augment.sample_keys(state['rng'], state['step'], batch['index'])
    views, frames = pretrain.make_views(batch, keys, cfg)
    return {n: v.astype(dtype) for n, v in views.items()}, frames

  base = bases.get(cfg.pretrain.base)
  drop_key = jax.random.key(0)

  def forward(params, stats, views, names, modes=None):
    model = nnx.merge(
      graphdef, pretrain.cast_floats(params, dtype), stats, copy=True
    )
    return pretrain.encode(model, views, names, drop_key, modes)

  @jax.jit
  def keys_fn(state, views):
    return forward(
      state['key_params'], state['key_batch_stats'], views, base.key_views
    )

  @jax.jit
  def grad_fn(state, views, frames, k_out):
    def loss(params):
      q_out = forward(
        params, state['batch_stats'], views, base.query_views, base.view_modes
      )
      return pretrain.compute_losses(
        q_out, k_out, state, pcfg, jax.numpy.bool_(True), frames
      )[0]

    return jax.grad(loss)(state['params'])

  step_fn = pretrain.make_train_step(cfg, graphdef, tx, schedule, mesh=mesh)
  views, frames = views_fn(state, batch)
  k_out = keys_fn(state, views)
  t = functools.partial(
    bench.time_calls, warmup=2, repeats=a.repeats, steps=a.steps
  )
  parts = {
    'views (augmentations)': t(lambda: views_fn(state, batch)),
    'key forwards': t(lambda: keys_fn(state, views)),
    'query forward+backward+losses': t(
      lambda: grad_fn(state, views, frames, k_out)
    ),
  }
  stepper = bench._Stepper(
    step_fn,
    jax.tree.map(jax.numpy.copy, state),  # pylint: disable=protected-access
    batch,
  )
  full = t(stepper)
  rest = full['median_s'] - sum(v['median_s'] for v in parts.values())
  print(
    f'{method} {a.backbone} width {a.width} batch {a.batch} clip '
    f'{a.clip_len} {a.dtype} on {jax.devices()[0].device_kind}'
  )
  print(f'{"part":<32} {"ms":>9} {"share":>7}')
  for name, s in parts.items():
    print(
      f'{name:<32} {1e3 * s["median_s"]:9.2f} '
      f'{s["median_s"] / full["median_s"]:7.1%}'
    )
  print(
    f'{"rest (update, queues, guard)":<32} {1e3 * rest:9.2f} '
    f'{rest / full["median_s"]:7.1%}'
  )
  print(
    f'{"full step":<32} {1e3 * full["median_s"]:9.2f}  '
    f'({a.batch / full["median_s"]:.0f} samples/s, compile '
    f'{full["compile_s"]:.1f} s)'
  )
  if a.trace_dir:
    with jax.profiler.trace(a.trace_dir):
      for _ in range(3):
        jax.block_until_ready(stepper())
  if a.out:
    with open(a.out, 'w') as f:
      json.dump(
        {
          'method': method,
          'backbone': a.backbone,
          'dtype': a.dtype,
          'width': a.width,
          'batch': a.batch,
          'clip_len': a.clip_len,
          'device': jax.devices()[0].device_kind,
          'parts_ms': {k: 1e3 * v['median_s'] for k, v in parts.items()},
          'full_ms': 1e3 * full['median_s'],
        },
        f,
        indent=2,
      )


if __name__ == '__main__':
  main()
