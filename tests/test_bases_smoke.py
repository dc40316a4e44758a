"""Every base method, with or without the snippet loss, on ST-GCN, trains on
the smoke synthetic data through ``main.run`` (8 simulated
devices), including the switch to nearest-neighbour mining after the first
epoch."""

import json

import numpy as np
import pytest

import configs
from skel_jax import main as main_lib

# Loss terms each base reports (besides the snippet loss).
TERMS = {
  'skeletonclr': ('loss_global',),
  'aimclr': ('loss_global', 'loss_ddm'),
  'rvtclr': ('loss_global', 'loss_cross_tempo', 'loss_tempo_rank', 'loss_ddm'),
}
STEPS = 6  # the smoke pretrain split is 4 steps per epoch


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


# Each base, and the snippet loss on and off, train here on ST-GCN. The rest
# of the base x snippet x backbone product is covered elsewhere, so it is not
# trained again (each combination compiles its own step; two more cost ~100 s
# of the suite): SkeletonCLR x AGCN (+snippet) trains through main.run in
# test_end_to_end, test_resume and test_multihost; the AimCLR and RVTCLR
# steps with the snippet loss and mining on AGCN are checked value by value,
# on 1 and 8 devices, in test_pretrain_step; the backbone does not depend on
# the base's views and losses (test_stgcn checks ST-GCN itself).
COMBOS = [
  ('aimclr', False, 'stgcn'),
  ('rvtclr', True, 'stgcn'),
  ('skeletonclr', True, 'stgcn'),
]


@pytest.mark.parametrize(
  'base,snippet,backbone',
  COMBOS,
  ids=[f'{b}-{"snippet" if s else "base"}-{k}' for b, s, k in COMBOS],
)
def test_base_trains(base, snippet, backbone, data_dir, tmp_path):
  tokens = [base, 'smoke'] + ([] if snippet else ['video'])
  if backbone == 'stgcn':
    tokens.append('stgcn')
  config = configs.load('pretrain_synthetic', ','.join(tokens))
  config.data.dir = data_dir
  config.num_steps = STEPS
  config.log_every = 1
  main_lib.run(config, str(tmp_path))

  with open(tmp_path / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  assert [r['step'] for r in records] == list(range(1, STEPS + 1))
  for r in records:
    terms = [r[k] for k in TERMS[base]]
    assert np.all(np.isfinite(terms))
    want = sum(terms)
    if snippet:
      want += config.pretrain.snippet_weight * r['loss_snippet']
    else:
      assert 'loss_snippet' not in r
    np.testing.assert_allclose(r['loss'], want, rtol=1e-5)
  # Mining (bases that mine) starts once the first epoch (4 steps) is done.
  mines = config.pretrain.mining_epoch >= 0
  assert [r['mining'] for r in records] == [0.0] * 4 + [float(mines)] * 2
  assert (tmp_path / 'checkpoints' / str(STEPS)).is_dir()
