r"""Fixed-seed fingerprints of one pretraining step per base and one
localization step per protocol: the check that a refactor changed no number.

  python scripts/step_fingerprint.py --out=/tmp/before.json
  # ... refactor ...
  python scripts/step_fingerprint.py --compare=/tmp/before.json

Every output leaf (new state and metrics) is hashed bit for bit (SHA-256 of
its bytes, keyed by its path), so ``--compare`` reports any leaf whose value
moved by even one ulp. Runs on one CPU device, plain ``jax.jit``; the
fingerprints are for one machine (another CPU's XLA kernels may round
differently).
"""

import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import numpy as np  # noqa: E402

from skel_jax import config_defaults  # noqa: E402
from skel_jax import finetune  # noqa: E402
from skel_jax import optim  # noqa: E402
from skel_jax import pretrain  # noqa: E402

PRETRAIN_CASES = (
  ('skeletonclr', 0.0, -1),
  ('skeletonclr', 1.5, -1),
  ('skeletonclr', 1.5, 0),  # mining on from step 0
  ('aimclr', 1.5, 0),
  ('rvtclr', 1.5, 0),
)
PROTOCOLS = ('finetune', 'linear', 'linear_fusion')
B = 4


def _leaf_hashes(tree):
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    a = np.ascontiguousarray(np.asarray(leaf))
    name = jax.tree_util.keystr(path)
    out[name] = hashlib.sha256(a.tobytes() + str(a.dtype).encode()).hexdigest()
  return out


def pretrain_case(base, snippet_weight, mining_step):
  c = config_defaults.pretrain_config()
  config_defaults.set_base(c, base)
  c.model.backbone.width = 0.125
  c.model.num_snippets = 4
  c.data.clip_len = 64 if base == 'rvtclr' else 32
  c.pretrain.queue_size = 16
  c.pretrain.snippet_queue_size = 16
  c.pretrain.snippet_weight = snippet_weight
  c.pretrain.mining_epoch = 0 if mining_step >= 0 else -1
  c.batch_size = B
  rng = np.random.default_rng(0)
  batch = {
    'x': (0.3 * rng.normal(size=(B, 1, c.data.clip_len, 25, 3))).astype(
      np.float32
    ),
    'index': np.arange(B, dtype=np.int32),
  }
  schedule = optim.warmup_step_schedule(c.optimizer.lr, 2, [5])
  tx = optim.make_optimizer(c.optimizer, schedule)
  graphdef, state = pretrain.init_state(c, tx)
  step = jax.jit(
    lambda s, b: pretrain.train_step(
      s,
      b,
      graphdef=graphdef,
      tx=tx,
      config=c,
      schedule=schedule,
      mining_step=mining_step,
    )
  )
  for _ in range(2):  # the second step sees a moved key encoder and queue
    state, metrics = step(state, batch)
  return {'state': state, 'metrics': metrics}


def finetune_case(protocol):
  c = config_defaults.finetune_config()
  c.model.backbone.width = 0.125
  c.model.num_snippets = 4
  c.model.head_dim = 16
  c.protocol = protocol
  c.init = 'random'
  c.batch_size = B
  rng = np.random.default_rng(1)
  t = 64
  batch = {
    'x': (0.3 * rng.normal(size=(B, 1, t, 25, 3))).astype(np.float32),
    'labels': rng.integers(-1, 4, size=(B, t)).astype(np.int32),
  }
  schedule = optim.warmup_step_schedule(c.optimizer.lr, 1, [])
  tx = optim.make_optimizer(c.optimizer, schedule)
  graphdef, state = finetune.initial_state(c, tx, 3)
  step = jax.jit(
    lambda s, b: finetune.train_step(
      s, b, graphdef=graphdef, tx=tx, protocol=protocol, schedule=schedule
    )
  )
  for _ in range(2):
    state, metrics = step(state, batch)
  return {'state': state, 'metrics': metrics}


def fingerprints():
  out = {}
  for base, w, mining in PRETRAIN_CASES:
    name = f'pretrain/{base}/snippet{w}/mining{mining}'
    out[name] = _leaf_hashes(pretrain_case(base, w, mining))
    print(f'[fingerprint] {name}: {len(out[name])} leaves', flush=True)
  for protocol in PROTOCOLS:
    name = f'finetune/{protocol}'
    out[name] = _leaf_hashes(finetune_case(protocol))
    print(f'[fingerprint] {name}: {len(out[name])} leaves', flush=True)
  return out


def compare(ref, new):
  """Lines naming every case/leaf that differs (empty: bit-identical)."""
  bad = []
  for case in sorted(set(ref) | set(new)):
    r, n = ref.get(case), new.get(case)
    if r is None or n is None:
      bad.append(f'{case}: only in {"new" if r is None else "reference"}')
      continue
    for leaf in sorted(set(r) | set(n)):
      if r.get(leaf) != n.get(leaf):
        bad.append(f'{case} {leaf}: differs')
  return bad


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', default='', help='write the fingerprints here')
  p.add_argument('--compare', default='', help='reference fingerprints')
  a = p.parse_args()
  fp = fingerprints()
  if a.out:
    with open(a.out, 'w') as f:
      json.dump(fp, f, indent=1, sort_keys=True)
    print(f'[fingerprint] wrote {a.out}')
  if a.compare:
    with open(a.compare) as f:
      bad = compare(json.load(f), fp)
    for line in bad:
      print(line)
    n = sum(len(v) for v in fp.values())
    print(
      f'[fingerprint] {n} leaves in {len(fp)} cases: '
      + ('bit-identical' if not bad else f'{len(bad)} differ')
    )
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
  main()
