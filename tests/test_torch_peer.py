"""The PyTorch peer of ``bench --vs_torch`` (skel_jax.torch_peer) against the
JAX steps, from the same weights and the same views, at a tiny width.

A float64 run of the peer is the reference of the gradient comparisons; at
this width both fp32 steps agree with it far more tightly than the bench's
tolerances (which leave room for the full-width network's rounding).
Skipped without torch (``pip install -e .[torch]``).
"""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax.numpy as jnp  # noqa: E402

from skel_jax import bench  # noqa: E402
from skel_jax import finetune  # noqa: E402
from skel_jax import optim  # noqa: E402
from skel_jax import pretrain  # noqa: E402
from skel_jax import torch_peer as tp  # noqa: E402

# Module fixtures compile the steps once: keep this file on one worker.
pytestmark = pytest.mark.xdist_group('torch_peer')
# Tests share the cores (xdist workers): torch's spinning OpenMP threads
# slow down badly when oversubscribed.
torch.set_num_threads(1)

# Batches of 8: config validation wants the 8 simulated devices to divide
# them (the checks themselves jit on one device).
OPTS = bench.quick_options(
  width=0.125,
  batch=8,
  clip_len=32,
  queue_size=16,
  persons=1,
  head_dim=16,
  num_classes=3,
  ft_batch=8,
  pad_length=32,
)
B = 8
# One step each: XLA's cheapest CPU codegen halves the compile.
FAST = {'xla_backend_optimization_level': 0}
TIGHT = {'forward': 1e-5, 'loss': 1e-5, 'state': 1e-5, 'grad': 1e-3}


def _params_compared(summary, module, kind, who):
  names = {n for n in summary['items'] if n.startswith(f'{kind}/{who}/')}
  expected = {
    f'{kind}/{who}/{n}'
    for n, _ in module.named_parameters()
    if not tp.ZERO_GRADIENT.search(n)
  }
  return names == expected


def _assert_tight(summary, kinds):
  """Every worst item within TIGHT (updates: 1e-3), ``kinds`` present."""
  for kind, worst in summary['worst'].items():
    assert worst['max_rel'] < TIGHT.get(kind.split('/')[0], 1e-3), worst
  assert set(kinds) <= set(summary['worst']), summary['worst'].keys()


@pytest.fixture(scope='module')
def pretrain_checks():
  """Two consecutive steps, each checked: the second starts from the first
  JAX step's state (SGD momentum, moved key encoder, queue pointers)."""
  cfg = bench.pretrain_config(OPTS, 'agcn', 'skeletonclr+snippet')
  # At init a tiny model embeds every clip alike: at T = 0.07 the InfoNCE is
  # saturated and its gradient is rounding. T = 0.5 keeps it informative.
  cfg.pretrain.temperature = 0.5
  schedule = optim.warmup_step_schedule(0.1, 0, [])
  tx = optim.make_optimizer(cfg.optimizer, schedule)
  graphdef, state = pretrain.init_state(cfg, tx)
  rng = np.random.default_rng(0)
  batch = {
    'x': bench._skeletons(rng, B, 1, 32),  # pylint: disable=protected-access
    'index': np.arange(B, dtype=np.int32),
  }
  step_fn = pretrain.make_train_step(cfg, graphdef, tx, schedule)
  step_fn = step_fn.lower(state, batch).compile(FAST)
  summaries = []
  for _ in range(2):
    peer = tp.PretrainPeer(cfg, tp.jax_scalar_fn(schedule))
    state, summary = tp.check_pretrain(
      cfg, graphdef, state, batch, step_fn, peer, strict=False
    )
    summaries.append((summary, peer))
  return summaries


def test_pretrain_forward_losses_and_step_match(pretrain_checks):
  for summary, peer in pretrain_checks:
    assert summary['ok'], summary['failed']
    assert summary['pointers_equal']
    _assert_tight(
      summary,
      ['forward', 'loss', 'state', 'grad/jax', 'grad/torch', 'update/jax'],
    )
    for kind in ('grad', 'update'):
      for who in ('jax', 'torch'):
        assert _params_compared(summary, peer.encoder_q, kind, who)
    items = summary['items']
    for name in ('loss', 'loss_global', 'loss_snippet', 'state/queue'):
      assert name in items
    assert any(n.startswith('state/key/') for n in items)
  # The second step ran from a moved state: momentum buffers were ported.
  second = pretrain_checks[1][1]
  assert second.step_count == 2 and second.queue_ptr == 2 * B % 16


def test_zero_gradient_parameters_are_the_ones_feeding_batch_norm(
  pretrain_checks,
):
  summary, peer = pretrain_checks[0]
  excluded = summary['excluded_zero_gradient']
  assert excluded and all(n.endswith('.bias') for n in excluded)
  # Every unit: 3 conv_a + 3 conv_d biases, the tcn conv's; no head bias.
  assert 'backbone.units.0.gcn.conv_a.2.bias' in excluded
  assert 'backbone.units.1.residual.conv.bias' in excluded
  assert 'backbone.units.0.gcn.down.bias' in excluded
  assert not any('head' in n for n in excluded)
  assert 'backbone.units.0.gcn.conv_b.0.bias' not in excluded


@pytest.fixture(scope='module')
def finetune_check():
  cfg = bench.finetune_config(OPTS, 'agcn', 'finetune')
  schedule = optim.warmup_step_schedule(1e-3, 0, [])
  tx = optim.make_optimizer(cfg.optimizer, schedule)
  graphdef, state = finetune.initial_state(
    cfg, tx, OPTS.num_classes, restore_backbone=False
  )
  rng = np.random.default_rng(1)
  labels = rng.integers(0, OPTS.num_classes + 1, (B, 32))
  labels[:, -8:] = -1
  batch = {
    'x': bench._skeletons(rng, B, 1, 32),  # pylint: disable=protected-access
    'labels': labels.astype(np.int32),
  }
  step_fn = finetune.make_train_step(graphdef, tx, 'finetune', schedule)
  step_fn = step_fn.lower(state, batch).compile(FAST)
  peer = tp.FinetunePeer(cfg, OPTS.num_classes, tp.jax_scalar_fn(schedule))
  _, summary = tp.check_finetune(
    cfg, graphdef, state, batch, step_fn, peer, strict=False
  )
  return summary, peer


def test_finetune_logits_loss_and_gradients_match(finetune_check):
  summary, peer = finetune_check
  assert summary['ok'], summary['failed']
  _assert_tight(summary, ['forward', 'loss', 'state', 'grad/jax'])
  for who in ('jax', 'torch'):
    assert _params_compared(summary, peer.model, 'grad', who)
  assert 'forward/logits' in summary['items']
  assert 'state/head.cu02.bn.running_var' in summary['items']


def test_report_flags_a_wrong_value():
  report = tp.Report()
  report.add('forward', 'a', np.array([1.0, 2.0]), np.array([1.0, 2.0]))
  report.add('loss', 'b', np.array(3.0), np.array(3.0 + 1e-3))
  summary = report.summary()
  assert not summary['ok'] and summary['failed'] == ['b']
  # Updates within 2 ulps of the stored parameter are its rounding.
  old = np.float32([0.02])
  new = old - np.float32(1e-6)
  report = tp.Report()
  report.add_update('u', new + np.spacing(new), new, old)
  assert report.items['u']['max_rel'] == 0.0


@pytest.mark.parametrize('stage', ['pretrain', 'finetune'])
def test_optimizers_match_optax(stage):
  """The peers' optimisers (SGD momentum / Adam, coupled weight decay) take
  the same steps as skel_jax.optim's from the same gradients."""
  if stage == 'pretrain':
    cfg = bench.pretrain_config(OPTS, 'agcn', 'skeletonclr')
    opt = tp.PretrainPeer(cfg, lambda s: 0.0).opt
  else:
    cfg = bench.finetune_config(OPTS, 'agcn', 'finetune')
    opt = tp.FinetunePeer(cfg, 3, lambda s: 0.0).opt
  lr = lambda step: 0.05 * (step + 1)
  tx = optim.make_optimizer(cfg.optimizer, lr)
  rng = np.random.default_rng(0)
  p0 = rng.normal(size=(4, 5)).astype(np.float32)
  jp = jnp.asarray(p0)
  opt_state = tx.init(jp)
  param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
  torch_opt = type(opt)([param], **opt.defaults)
  for step in range(3):
    g = rng.normal(size=p0.shape).astype(np.float32)
    updates, opt_state = tx.update(jnp.asarray(g), opt_state, jp)
    jp = jp + updates
    for group in torch_opt.param_groups:
      group['lr'] = lr(step)
    param.grad = torch.from_numpy(g)
    torch_opt.step()
    np.testing.assert_allclose(
      param.detach().numpy(), np.asarray(jp), rtol=1e-5, atol=1e-6
    )


def test_views_match_numpy_reference():
  """Crop (edge-repeating padding), shear, normalised zero-padded blur and
  axis mask of the peer's views, from given draws."""
  cfg = bench.pretrain_config(OPTS, 'agcn', 'skeletonclr').augment
  n, m, t, v = 2, 1, 20, 25
  pad = t // cfg.crop_padding_ratio
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, m, t, v, 3)).astype(np.float32)
  shear = rng.uniform(-0.5, 0.5, (n, 3, 3)).astype(np.float32)
  shear[:, range(3), range(3)] = 1.0
  p = {
    'offset': torch.tensor([0, 2 * pad]),
    'shear': torch.from_numpy(shear),
    'noise_on': torch.tensor([False, False]),
    'sigma': torch.tensor([0.7, 1.5]),
    'blur_on': torch.tensor([True, False]),
    'axis': torch.tensor([1, 2]),
    'mask_on': torch.tensor([True, True]),
  }
  out = tp.apply_view(torch.from_numpy(x), p, cfg).numpy()
  padded = np.pad(np.arange(t), pad, mode='symmetric')
  for i in range(n):
    off = int(p['offset'][i])
    y = x[i][:, padded[off : off + t]] @ shear[i].T
    if bool(p['blur_on'][i]):
      r = np.arange(cfg.blur_kernel) - (cfg.blur_kernel - 1) / 2
      w = np.exp(-0.5 * (r / float(p['sigma'][i])) ** 2)
      w /= w.sum()
      y = np.apply_along_axis(lambda s: np.convolve(s, w, 'same'), 1, y)
    y[..., int(p['axis'][i])] = 0.0
    np.testing.assert_allclose(out[i], y, rtol=1e-5, atol=1e-6)


def test_peer_views_have_the_batch_shape():
  cfg = bench.pretrain_config(OPTS, 'agcn', 'skeletonclr+snippet')
  peer = tp.PretrainPeer(cfg, lambda s: 0.1)
  x = torch.randn(B, 1, 32, 25, 3)
  q, k = peer.views(x)
  assert q.shape == k.shape == x.shape
  metrics = peer.step(x)
  assert set(metrics) == {'loss', 'loss_global', 'loss_snippet'}
  assert peer.queue_ptr == B and peer.snippet_queue_ptr == B


def test_video_level_step_skips_the_snippet_head():
  cfg = bench.pretrain_config(OPTS, 'agcn', 'skeletonclr')
  peer = tp.PretrainPeer(cfg, lambda s: 0.1)
  metrics = peer.step(torch.randn(B, 1, 32, 25, 3))
  assert set(metrics) == {'loss', 'loss_global'}
  assert peer.queue_ptr == B and peer.snippet_queue_ptr == 0
  assert all(p.grad is None for p in peer.encoder_q.snippet_head.parameters())


def test_unimplemented_settings_are_refused():
  cfg = bench.pretrain_config(OPTS, 'agcn', 'aimclr+snippet')
  with pytest.raises(ValueError, match='pretrain.base'):
    tp.PretrainPeer(cfg, lambda s: 0.1)
  cfg = bench.finetune_config(OPTS, 'agcn', 'linear')
  with pytest.raises(ValueError, match='protocol'):
    tp.FinetunePeer(cfg, 3, lambda s: 0.1)


def test_vs_table_and_alternating_timer():
  calls = {'a': lambda: None, 'b': lambda: None}
  timed = bench.time_alternating(calls, warmup=1, repeats=3, steps=2)
  assert set(timed) == {'a', 'b'} and len(timed['a']['times_s']) == 3
  peak = {'n': 8, 'jax_gflops_per_s': 10.0, 'torch_gflops_per_s': 20.0}
  peak['peak_gflops_per_s'] = 20.0
  check = {
    'ok': True,
    'failed': [],
    'max_abs': 1e-7,
    'max_rel': 2e-6,
    'compared': 3,
    'tolerance': tp.TOLERANCE,
    'worst': {},
    'excluded_zero_gradient': ['x'],
  }
  timed = {
    'jax': {'median_s': 2.0, 'iqr_s': 0.1},
    'torch': {'median_s': 1.0, 'iqr_s': 0.1},
  }
  row = bench._vs_row(  # pylint: disable=protected-access
    'pretrain_step_vs_torch',
    'agcn',
    'skeletonclr+snippet',
    2,
    (2, 1, 32, 25, 3),
    timed,
    5.0,
    4e9,
    3e9,
    check,
    peak,
  )
  assert row['torch_over_jax'] == 0.5
  assert row['jax_gflops_per_s'] == 2.0 and row['torch_fraction_of_peak'] == 0.2
  table = bench.format_vs_table([row], peak)
  assert 'pretrain_step' in table and '0.50' in table and '(ok)' in table
