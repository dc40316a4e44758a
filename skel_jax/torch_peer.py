"""A PyTorch peer of the AGCN pretraining and finetune steps, for
``python -m skel_jax.bench --vs_torch`` (side-by-side timing) and a
weight-ported equivalence check.

The model is written the way the released PyTorch code writes it (2s-AGCN:
channels first, (N, C, T, V); one 1x1 conv per adjacency subset; attention as
two batched matmuls), from docs/method.md and the settings skel_jax trains
with: the 10-unit AGCN, SkeletonCLR's MoCo with the dense snippet loss
(argmax positives, per-video mean negatives, both queues advancing), the
U-shaped fusion head with the masked frame cross entropy, and the optimisers
of ``skel_jax.optim`` (SGD with momentum, Adam; PyTorch's coupled
``weight_decay``). Its steps do what the jitted JAX steps do: the pretraining
step makes its two augmented views on the fly (crop, shear; noise, blur and
axis mask on the query), updates the key encoder by momentum, runs the key
forward, the query forward and backward, the optimiser and both enqueues.

torch is an optional extra (``pip install -e .[torch]``): only
``skel_jax.bench`` imports this module, and only under ``--vs_torch``.

Sections: the model; augmentations; the training steps; the weight port from
a JAX state; the checks against the JAX step (same weights, same views).
"""

import copy
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from skel_jax import augment
from skel_jax import graph
from skel_jax import pretrain
from skel_jax.models import agcn as jax_agcn
from skel_jax.models import layers as jax_layers


# ---------------------------------------------------------------------------
# Model (channels first: (N, C, T, V)).
# ---------------------------------------------------------------------------
class UnitGCN(nn.Module):
  """2s-AGCN ``unit_gcn``: A + PA + data-dependent attention, 3 subsets."""

  def __init__(self, cin, cout, adjacency, embed_ratio=4):
    super().__init__()
    k = adjacency.shape[0]
    self.inter = max(cout // embed_ratio, 1)
    self.register_buffer('A', torch.from_numpy(adjacency.astype(np.float32)))
    self.PA = nn.Parameter(torch.full(adjacency.shape, 1e-6))
    self.conv_a = nn.ModuleList(nn.Conv2d(cin, self.inter, 1) for _ in range(k))
    self.conv_b = nn.ModuleList(nn.Conv2d(cin, self.inter, 1) for _ in range(k))
    self.conv_d = nn.ModuleList(nn.Conv2d(cin, cout, 1) for _ in range(k))
    self.bn = nn.BatchNorm2d(cout)
    if cin != cout:
      self.down = nn.Conv2d(cin, cout, 1)
      self.down_bn = nn.BatchNorm2d(cout)
    else:
      self.down = None

  def forward(self, x):
    n, c, t, v = x.shape
    adj = self.A + self.PA
    y = None
    for i in range(adj.shape[0]):
      a1 = self.conv_a[i](x).permute(0, 3, 1, 2).reshape(n, v, self.inter * t)
      a2 = self.conv_b[i](x).view(n, self.inter * t, v)
      att = torch.softmax(torch.matmul(a1, a2) / a1.size(-1), dim=-2)
      agg = torch.matmul(x.view(n, c * t, v), att + adj[i]).view(n, c, t, v)
      z = self.conv_d[i](agg)
      y = z if y is None else y + z
    y = self.bn(y)
    y = y + (x if self.down is None else self.down_bn(self.down(x)))
    return F.relu(y)


class UnitTCN(nn.Module):
  """``unit_tcn``: (k x 1) conv over time, stride s, then BN."""

  def __init__(self, cin, cout, kernel=9, stride=1):
    super().__init__()
    pad = (kernel - 1) // 2
    self.conv = nn.Conv2d(
      cin, cout, (kernel, 1), padding=(pad, 0), stride=(stride, 1)
    )
    self.bn = nn.BatchNorm2d(cout)

  def forward(self, x):
    return self.bn(self.conv(x))


class AGCNUnit(nn.Module):
  """``TCN_GCN_unit``: relu(tcn(gcn(x)) + residual(x))."""

  def __init__(self, cin, cout, adjacency, stride=1, residual=True):
    super().__init__()
    self.gcn = UnitGCN(cin, cout, adjacency)
    self.tcn = UnitTCN(cout, cout, stride=stride)
    if not residual:
      self.residual_kind, self.residual = 'none', None
    elif cin == cout and stride == 1:
      self.residual_kind, self.residual = 'identity', None
    else:
      self.residual_kind = 'conv'
      self.residual = UnitTCN(cin, cout, kernel=1, stride=stride)

  def forward(self, x):
    y = self.tcn(self.gcn(x))
    if self.residual_kind == 'identity':
      y = y + x
    elif self.residual_kind == 'conv':
      y = y + self.residual(x)
    return F.relu(y)


class AGCN(nn.Module):
  """The 10 units (no input BN, unit 1 without residual); returns every
  unit's output, (N, C_i, T_i, V)."""

  def __init__(self, width=1.0, in_channels=3):
    super().__init__()
    adjacency = graph.agcn_spatial_partition()
    self.channels = [
      jax_layers.scaled(c, width) for c in jax_agcn.AGCN_CHANNELS
    ]
    units, cin = [], in_channels
    for i, (cout, stride) in enumerate(
      zip(self.channels, jax_agcn.AGCN_STRIDES)
    ):
      units.append(AGCNUnit(cin, cout, adjacency, stride, residual=i > 0))
      cin = cout
    self.units = nn.ModuleList(units)
    self.out_channels = cin

  def forward(self, x):
    feats = []
    for unit in self.units:
      x = unit(x)
      feats.append(x)
    return feats


def fold_persons(x):
  """(N, M, T, V, C) skeletons (skel_jax's batch layout) -> (N*M, C, T, V)."""
  n, m, t, v, c = x.shape
  return x.permute(0, 1, 4, 2, 3).reshape(n * m, c, t, v).contiguous()


def joint_and_person_mean(feat, n):
  """(N*M, C, T, V) -> (N, C, T): mean over joints, then persons."""
  f = feat.mean(3)
  return f.view(n, -1, *f.shape[1:]).mean(1)


class MoCoEncoder(nn.Module):
  """AGCN + SkeletonCLR's global MLP head + the dense snippet head."""

  def __init__(self, width, feature_dim, num_snippets):
    super().__init__()
    self.backbone = AGCN(width)
    c = self.backbone.out_channels
    self.num_snippets = num_snippets
    self.global_head = nn.Sequential(
      nn.Linear(c, c), nn.ReLU(), nn.Linear(c, feature_dim)
    )
    # 1x1 convs over the snippet axis (N, C, S).
    self.snippet_head = nn.Sequential(
      nn.Conv1d(c, c, 1), nn.ReLU(), nn.Conv1d(c, feature_dim, 1)
    )

  def forward(self, x, snippets=True):
    """x (N, M, T, V, 3) -> global (N, D), snippets (N, D, S), the pooled
    backbone features (N, C, S) (the correspondence is computed on them).
    ``snippets=False``: global only, (N, D), None, None (XLA drops the
    unused snippet head of the JAX step the same way)."""
    feat = joint_and_person_mean(self.backbone(fold_persons(x))[-1], len(x))
    glob = F.normalize(self.global_head(feat.mean(2)), dim=1)
    if not snippets:
      return glob, None, None
    pooled = F.adaptive_avg_pool1d(feat, self.num_snippets)
    return glob, F.normalize(self.snippet_head(pooled), dim=1), pooled


class ConvUnit(nn.Module):
  def __init__(self, c):
    super().__init__()
    self.conv = nn.Conv1d(c, c, 3, padding=1)
    self.bn = nn.BatchNorm1d(c)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def upsample(x, length):
  return x if x.size(-1) == length else F.interpolate(x, size=length)


class UFusionHead(nn.Module):
  """The U-shaped multiscale fusion (docs/method.md section 4) and the
  per-frame classifier, on taps (N, C_i, T_i)."""

  def __init__(self, tap_channels, head_dim, num_outputs):
    super().__init__()
    c0, c1, c2 = tap_channels
    c02 = c0 + (c0 + c1) + (c1 + c2)
    self.cu01 = ConvUnit(c0 + c1)
    self.cu11 = ConvUnit(c1 + c2)
    self.cu02 = ConvUnit(c02)
    self.fuse = nn.Conv1d(c0 + (c0 + c1) + c02, head_dim, 1)
    self.classifier = nn.Conv1d(head_dim, num_outputs, 1)

  def forward(self, taps):
    x0, x1, x2 = taps
    t0, t1 = x0.size(-1), x1.size(-1)
    x01 = self.cu01(torch.cat([x0, upsample(x1, t0)], 1))
    x11 = self.cu11(torch.cat([x1, upsample(x2, t1)], 1))
    x02 = self.cu02(torch.cat([x0, x01, upsample(x11, t0)], 1))
    return self.classifier(self.fuse(torch.cat([x0, x01, x02], 1)))


class Localizer(nn.Module):
  """AGCN + U-fusion: (N, M, T, V, 3) -> frame logits (N, K + 1, T)."""

  def __init__(self, width, taps, head_dim, num_classes):
    super().__init__()
    self.backbone = AGCN(width)
    self.taps = tuple(taps)  # 1-based unit indices
    tap_channels = [self.backbone.channels[i - 1] for i in self.taps]
    self.head = UFusionHead(tap_channels, head_dim, num_classes + 1)

  def forward(self, x):
    feats = self.backbone(fold_persons(x))
    taps = [joint_and_person_mean(feats[i - 1], len(x)) for i in self.taps]
    return self.head(taps)


# ---------------------------------------------------------------------------
# Augmentations: the pretraining views, batched (per-sample draws).
# ---------------------------------------------------------------------------
def sample_view_params(n, t, cfg, strong, gen):
  """Random draws of one view per sample, as ``augment.augment`` draws them
  (crop offset, shear matrix; noise, blur sigma, masked axis and whether
  each strong augmentation applies)."""
  u = lambda *shape: torch.rand(*shape, generator=gen)
  pad = t // cfg.crop_padding_ratio if cfg.crop_padding_ratio > 0 else 0
  a = cfg.shear_amplitude
  p = {
    'offset': torch.randint(0, 2 * pad + 1, (n,), generator=gen),
    'shear': torch.where(
      torch.eye(3, dtype=torch.bool), torch.ones(()), (2 * u(n, 3, 3) - 1) * a
    ),
  }
  if strong:
    lo, hi = cfg.blur_sigma
    p.update(
      noise_on=u(n) < cfg.noise_prob,
      sigma=lo + (hi - lo) * u(n),
      blur_on=u(n) < cfg.blur_prob,
      axis=torch.randint(0, 3, (n,), generator=gen),
      mask_on=u(n) < cfg.axis_mask_prob,
    )
  return p


def crop_index(t, offset, padding_ratio):
  """(N, T) source frames: edge-repeating ('symmetric') padding of T //
  ratio frames each side, T frames from each sample's offset."""
  pad = t // padding_ratio
  frames = torch.arange(t)
  padded = torch.cat([frames[:pad].flip(0), frames, frames[t - pad :].flip(0)])
  return padded[offset[:, None] + torch.arange(t)]


def apply_view(x, p, cfg, gen=None):
  """x (N, M, T, V, 3) -> the view drawn in ``p``. The Gaussian noise is
  drawn here (from ``gen``) when the draws ask for it."""
  n, m, t, v, c = x.shape
  if cfg.crop_padding_ratio > 0 and t // cfg.crop_padding_ratio:
    idx = crop_index(t, p['offset'], cfg.crop_padding_ratio)
    x = torch.take_along_dim(x, idx[:, None, :, None, None], dim=2)
  if cfg.shear_amplitude > 0:
    x = torch.einsum('nmtvc,ndc->nmtvd', x, p['shear'])
  if 'sigma' not in p:
    return x
  on = lambda key: p[key].view(n, 1, 1, 1, 1)
  noise = cfg.noise_std * torch.randn(x.shape, generator=gen)
  x = torch.where(on('noise_on'), x + noise, x)
  # Normalised temporal Gaussian, zero padded: one grouped conv1d over every
  # (person, joint, coordinate) signal, each sample with its own kernel.
  k = cfg.blur_kernel
  r = torch.arange(k, dtype=x.dtype) - (k - 1) / 2
  w = torch.exp(-0.5 * (r / p['sigma'][:, None]) ** 2)
  if cfg.get('blur_normalize', True):
    w = w / w.sum(1, keepdim=True)
  sig = x.permute(0, 1, 3, 4, 2).reshape(1, n * m * v * c, t)
  weight = w.repeat_interleave(m * v * c, 0)[:, None, :]
  blurred = F.conv1d(sig, weight, padding=(k - 1) // 2, groups=n * m * v * c)
  blurred = blurred.view(n, m, v, c, t).permute(0, 1, 4, 2, 3)
  x = torch.where(on('blur_on'), blurred, x)
  keep = (torch.arange(3) != p['axis'][:, None]).to(x.dtype)
  return torch.where(on('mask_on'), x * keep.view(n, 1, 1, 1, 3), x)


# ---------------------------------------------------------------------------
# Training steps.
# ---------------------------------------------------------------------------
def _require(cond, key, value, why):
  if not cond:
    raise ValueError(f'torch peer: {key}={value!r} is not implemented ({why})')


def check_pretrain_config(cfg):
  """ValueError naming the first setting the peer does not implement."""
  p = cfg.pretrain
  for key, value, ok in (
    ('model.backbone.name', cfg.model.backbone.name, 'agcn'),
    ('pretrain.base', p.base, 'skeletonclr'),
    ('pretrain.negatives', p.negatives, 'queue'),
    ('pretrain.snippet_positive', p.snippet_positive, 'argmax'),
    ('pretrain.snippet_negatives', p.snippet_negatives, 'video_mean'),
    ('pretrain.compute_dtype', p.compute_dtype, 'float32'),
    ('optimizer.name', cfg.optimizer.name, 'sgd'),
  ):
    _require(value == ok, key, value, f'only {ok!r}')
  _require(p.mining_epoch < 0, 'pretrain.mining_epoch', p.mining_epoch, '-1')
  _require(
    not cfg.model.get('head_batch_norm', False),
    'model.head_batch_norm',
    True,
    'the released heads have no BN',
  )
  _require(
    not cfg.optimizer.get('grad_clip_norm', 0),
    'optimizer.grad_clip_norm',
    cfg.optimizer.grad_clip_norm,
    'no clipping',
  )


def check_finetune_config(cfg):
  for key, value, ok in (
    ('model.backbone.name', cfg.model.backbone.name, 'agcn'),
    ('protocol', cfg.protocol, 'finetune'),
    ('model.head', cfg.model.head, 'ufusion'),
    ('optimizer.name', cfg.optimizer.name, 'adam'),
  ):
    _require(value == ok, key, value, f'only {ok!r}')
  _require(
    not cfg.optimizer.get('grad_clip_norm', 0),
    'optimizer.grad_clip_norm',
    cfg.optimizer.grad_clip_norm,
    'no clipping',
  )


def _set_lr(opt, lr):
  for group in opt.param_groups:
    group['lr'] = lr


class PretrainPeer:
  """SkeletonCLR (+ snippet loss) pretraining, MoCo-style: query encoder,
  momentum key encoder, two queues (K, D). ``lr_fn(step)``: the learning
  rate of a step (the JAX schedule)."""

  def __init__(self, cfg, lr_fn, seed=0):
    check_pretrain_config(cfg)
    self.cfg, self.lr_fn = cfg, lr_fn
    m = cfg.model
    self.encoder_q = MoCoEncoder(
      m.backbone.width, m.feature_dim, m.num_snippets
    )
    self.encoder_k = copy.deepcopy(self.encoder_q)
    for p in self.encoder_k.parameters():
      p.requires_grad_(False)
    o = cfg.optimizer
    self.opt = torch.optim.SGD(
      self.encoder_q.parameters(),
      lr=0.0,
      momentum=o.momentum,
      weight_decay=o.weight_decay,
    )
    pc = cfg.pretrain
    self.queue = F.normalize(torch.randn(pc.queue_size, m.feature_dim), dim=1)
    self.snippet_queue = F.normalize(
      torch.randn(pc.snippet_queue_size, m.feature_dim), dim=1
    )
    self.queue_ptr = self.snippet_queue_ptr = 0
    self.step_count = 0
    self.gen = torch.Generator().manual_seed(seed)

  def views(self, x):
    """(query view, key view) of a batch (N, M, T, V, 3)."""
    a = self.cfg.augment
    n, t = x.shape[0], x.shape[2]
    pq = sample_view_params(n, t, a, a.query_strong, self.gen)
    pk = sample_view_params(n, t, a, False, self.gen)
    return apply_view(x, pq, a, self.gen), apply_view(x, pk, a)

  def step(self, x):
    """One training step on a raw batch (its views are made here)."""
    return self.step_on_views(*self.views(x))

  def step_on_views(self, x_q, x_k):
    pc = self.cfg.pretrain
    snippets = pc.snippet_weight > 0
    _set_lr(self.opt, self.lr_fn(self.step_count))
    with torch.no_grad():
      # Key encoder first, from the pre-update query weights (MoCo order).
      for pk, pq in zip(
        self.encoder_k.parameters(), self.encoder_q.parameters()
      ):
        pk.mul_(pc.momentum).add_(pq, alpha=1.0 - pc.momentum)
      k_glob, k_snip, k_pooled = self.encoder_k(x_k, snippets)
    q_glob, q_snip, q_pooled = self.encoder_q(x_q, snippets)
    losses = self.losses(q_glob, q_snip, q_pooled, k_glob, k_snip, k_pooled)
    self.opt.zero_grad(set_to_none=True)
    losses['loss'].backward()
    self.opt.step()
    with torch.no_grad():
      self.queue_ptr = self._enqueue(self.queue, self.queue_ptr, k_glob)
      if snippets:
        entries = F.normalize(k_snip.mean(2), dim=1)
        self.snippet_queue_ptr = self._enqueue(
          self.snippet_queue, self.snippet_queue_ptr, entries
        )
    self.step_count += 1
    return {k: v.detach() for k, v in losses.items()}

  def losses(self, q_glob, q_snip, q_pooled, k_glob, k_snip, k_pooled):
    pc = self.cfg.pretrain
    labels = torch.zeros(len(q_glob), dtype=torch.long)
    logits = torch.cat(
      [(q_glob * k_glob).sum(1, keepdim=True), q_glob @ self.queue.t()], 1
    )
    l_global = F.cross_entropy(logits / pc.temperature, labels)
    out = {'loss_global': l_global, 'loss': l_global}
    if pc.snippet_weight > 0:
      # Positive: the key snippet whose pooled features are the most
      # similar; negatives: the snippet queue (per-video means).
      sim = torch.einsum(
        'ncs,nct->nst',
        F.normalize(q_pooled, dim=1),
        F.normalize(k_pooled, dim=1),
      )
      match = sim.argmax(-1)  # (N, S)
      k_pos = torch.gather(k_snip, 2, match[:, None].expand_as(k_snip))
      pos = (q_snip * k_pos).sum(1)  # (N, S)
      neg = torch.einsum('nds,kd->nsk', q_snip, self.snippet_queue)
      s_logits = torch.cat([pos[..., None], neg], -1).flatten(0, 1)
      l_snip = F.cross_entropy(
        s_logits / pc.temperature,
        torch.zeros(len(s_logits), dtype=torch.long),
      )
      out['loss_snippet'] = l_snip
      out['loss'] = l_global + pc.snippet_weight * l_snip
    return out

  @staticmethod
  def _enqueue(queue, ptr, keys):
    queue[ptr : ptr + len(keys)] = keys
    return (ptr + len(keys)) % len(queue)


class FinetunePeer:
  """Full finetuning of AGCN + U-fusion with Adam (coupled weight decay)."""

  def __init__(self, cfg, num_classes, lr_fn):
    check_finetune_config(cfg)
    self.cfg, self.lr_fn = cfg, lr_fn
    m = cfg.model
    self.model = Localizer(m.backbone.width, m.taps, m.head_dim, num_classes)
    self.opt = torch.optim.Adam(
      self.model.parameters(), lr=0.0, weight_decay=cfg.optimizer.weight_decay
    )
    self.step_count = 0

  def step(self, x, labels):
    """x (N, M, T, V, 3), labels (N, T) with -1 on padded frames."""
    _set_lr(self.opt, self.lr_fn(self.step_count))
    logits = self.model(x)
    loss = F.cross_entropy(logits, labels, ignore_index=-1)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    self.step_count += 1
    return {'loss': loss.detach()}


# ---------------------------------------------------------------------------
# Weight port: JAX (nnx pure dicts, channels last) -> torch state_dict.
# ---------------------------------------------------------------------------
def _t(a):
  return torch.from_numpy(np.array(a, dtype=np.float32))


def _bn(p, s, pre, out):
  out[pre + 'weight'] = _t(p['scale'])
  out[pre + 'bias'] = _t(p['bias'])
  if s is not None:
    out[pre + 'running_mean'] = _t(s['mean'])
    out[pre + 'running_var'] = _t(s['var'])
    out[pre + 'num_batches_tracked'] = torch.zeros((), dtype=torch.long)


def _dense(p, pre, out, conv_dims=0):
  """Linear kernel (in, out) -> torch (out, in) (+ ``conv_dims`` 1-dims)."""
  w = _t(p['kernel']).t()
  out[pre + 'weight'] = w.reshape(*w.shape, *([1] * conv_dims)).contiguous()
  out[pre + 'bias'] = _t(p['bias'])


def _conv(p, pre, out):
  """nnx.Conv kernel (*spatial, in, out) -> torch (out, in, *spatial)."""
  w = _t(p['kernel'])
  out[pre + 'weight'] = w.permute(-1, -2, *range(w.ndim - 2)).contiguous()
  out[pre + 'bias'] = _t(p['bias'])


def _gcn(p, s, pre, out):
  """One dense layer per projection in JAX, one 1x1 conv per subset here:
  embed_a/b's outputs are (subset, inter) and project's inputs (subset,
  channel). JAX's single project bias goes to conv_d.0 (conv_d.1/2: 0)."""
  k = p['pa'].shape[0]
  cin = p['embed_a']['kernel'].shape[0]
  inter = p['embed_a']['kernel'].shape[1] // k
  out[pre + 'PA'] = _t(p['pa'])
  for i in range(k):
    for src, dst in (('embed_a', 'conv_a'), ('embed_b', 'conv_b')):
      sl = slice(i * inter, (i + 1) * inter)
      part = {'kernel': p[src]['kernel'][:, sl], 'bias': p[src]['bias'][sl]}
      _dense(part, f'{pre}{dst}.{i}.', out, conv_dims=2)
    bias = p['project']['bias']
    part = {
      'kernel': p['project']['kernel'][i * cin : (i + 1) * cin],
      'bias': bias if i == 0 else np.zeros_like(bias),
    }
    _dense(part, f'{pre}conv_d.{i}.', out, conv_dims=2)
  _bn(p['bn'], s and s['bn'], pre + 'bn.', out)
  if 'down' in p:
    _dense(p['down'], pre + 'down.', out, conv_dims=2)
    _bn(p['down_bn'], s and s['down_bn'], pre + 'down_bn.', out)


def _backbone(p, s, pre, out):
  for i in sorted(p['units']):
    up, us = p['units'][i], s and s['units'][i]
    u = f'{pre}units.{i}.'
    _gcn(up['gcn'], us and us['gcn'], u + 'gcn.', out)
    for name in ('tcn', 'residual'):
      if name in up:
        _conv(up[name]['conv'], f'{u}{name}.conv.', out)
        _bn(up[name]['bn'], us and us[name]['bn'], f'{u}{name}.bn.', out)


def _pure(tree):
  if tree is None:
    return None
  if isinstance(tree, nnx.State):
    tree = nnx.to_pure_dict(tree)
  return jax.tree.map(np.asarray, tree)


def encoder_state_dict(params, stats):
  """A ``MoCoEncoder`` state_dict from skel_jax's MoCoEncoder params and BN
  statistics (nnx States or pure dicts)."""
  p, s = _pure(params), _pure(stats)
  out = {}
  _backbone(p['backbone'], s and s['backbone'], 'backbone.', out)
  for j, name in ((0, 'fc1'), (2, 'fc2')):
    _dense(p['global_head'][name], f'global_head.{j}.', out)
    _dense(p['snippet_head'][name], f'snippet_head.{j}.', out, conv_dims=1)
  return out


def localizer_state_dict(params, stats):
  """A ``Localizer`` state_dict from skel_jax's Localizer params / stats."""
  p, s = _pure(params), _pure(stats)
  out = {}
  _backbone(p['backbone'], s and s['backbone'], 'backbone.', out)
  h, hs = p['head'], s and s['head']
  for name in ('cu01', 'cu11', 'cu02'):
    _conv(h[name]['conv'], f'head.{name}.conv.', out)
    _bn(h[name]['bn'], hs and hs[name]['bn'], f'head.{name}.bn.', out)
  _conv(h['fuse'], 'head.fuse.', out)
  _dense(h['classifier'], 'head.classifier.', out, conv_dims=1)
  return out


def _load(module, state_dict):
  # Buffers that are not weights (the fixed adjacency) stay as built.
  missing, unexpected = module.load_state_dict(state_dict, strict=False)
  missing = [k for k in missing if not k.endswith('.A')]
  if missing or unexpected:
    raise ValueError(
      f'weight port: missing {missing[:5]}, unexpected {unexpected[:5]}'
    )


def _momentum_buffers(opt, module, state_dict):
  by_name = dict(module.named_parameters())
  for name, value in state_dict.items():
    if name in by_name:
      opt.state[by_name[name]]['momentum_buffer'] = value.clone()


def load_pretrain_state(peer, state):
  """Loads skel_jax.pretrain's state (encoders, BN statistics, SGD momentum,
  queues, step) into a ``PretrainPeer``."""
  _load(
    peer.encoder_q, encoder_state_dict(state['params'], state['batch_stats'])
  )
  _load(
    peer.encoder_k,
    encoder_state_dict(state['key_params'], state['key_batch_stats']),
  )
  # optax.chain(add_decayed_weights, sgd): sgd's trace is the momentum buffer.
  if int(state['step']) > 0:
    trace = _opt_field(state['opt_state'], optax.TraceState, 'trace')
    _momentum_buffers(peer.opt, peer.encoder_q, encoder_state_dict(trace, None))
  peer.queue = _t(state['queue'])
  peer.snippet_queue = _t(state['snippet_queue'])
  peer.queue_ptr = int(state['queue_ptr'])
  peer.snippet_queue_ptr = int(state['snippet_queue_ptr'])
  peer.step_count = int(state['step'])


def load_finetune_state(peer, state):
  """Loads a fresh skel_jax.finetune state (protocol 'finetune', step 0)
  into a ``FinetunePeer`` (Adam's moments start at zero on both sides)."""
  if int(state['step']) != 0:
    raise ValueError('load_finetune_state ports step-0 states only')
  _load(
    peer.model, localizer_state_dict(state['trainable'], state['batch_stats'])
  )
  peer.step_count = 0


# ---------------------------------------------------------------------------
# Checks against the JAX step: same weights, same views.
# ---------------------------------------------------------------------------
# Parameters whose gradient is zero in exact arithmetic, so that what the
# optimiser does to them is rounding noise (which Adam scales up to +-lr):
# biases feeding a train-mode BatchNorm, and conv_a's bias, which shifts
# every softmax column of the attention by a constant. They are left out of
# the gradient and update comparisons.
ZERO_GRADIENT = re.compile(
  r'(gcn\.conv_[ad]\.\d+|gcn\.down|tcn\.conv|residual\.conv|head\.cu\d+\.conv)'
  r'\.bias$'
)
# Each comparison is max |value - reference| over max |reference| of a
# tensor (losses: over max(|loss|, 1), since a saturated InfoNCE is a
# difference of logits ~1/T). 'forward', 'loss', 'state' (BN statistics,
# queues, key encoder): the fp32 torch step against the fp32 JAX step.
# 'grad' (SGD's momentum buffer or Adam's first moment after one step) and
# 'update' (new - old parameters, SGD only): each fp32 step against the same
# step of the torch peer in float64, because fp32 gradients of a 10-unit
# network differ from exact ones by up to ~1e-2 (torch's more than JAX's at
# width 1), far above the forward's ~1e-6; a wrong gradient or optimiser is
# off by O(1). Update differences within 2 ulps of the stored float32
# parameter are its rounding and not counted. Adam's updates are not
# compared: its first step g / (|g| + eps) turns rounding of gradients near
# eps into O(lr) differences (the test file checks the optimisers alone).
TOLERANCE = {
  'forward': 1e-4,
  'loss': 1e-4,
  'state': 1e-4,
  'grad': 5e-2,
  'update': 5e-2,
}
FLOOR = {'loss': 1.0}


def rel_diff(a, b, floor=0.0):
  """max |a - b| / max(max |b|, floor) (b the reference)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = max(float(np.max(np.abs(b))), floor, 1e-30)
  return float(np.max(np.abs(a - b))) / scale


def _np(x):
  return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class Report:
  """Named comparisons: max abs / relative difference, against TOLERANCE."""

  def __init__(self):
    self.items = {}

  def add(self, kind, name, value, reference):
    a, b = _np(value), _np(reference)
    if a.shape != b.shape:
      raise ValueError(f'{name}: shape {a.shape} != reference {b.shape}')
    self.items[name] = {
      'kind': kind,
      'max_abs': float(np.max(np.abs(a.astype(np.float64) - b))),
      'max_rel': rel_diff(a, b, FLOOR.get(kind, 0.0)),
    }

  def add_update(self, name, new, new_reference, old):
    """Parameter update (new - old) against the reference's, less the
    float32 storage rounding of the new value."""
    a, b, o = (_np(v).astype(np.float64) for v in (new, new_reference, old))
    ulp = np.spacing(np.abs(b).astype(np.float32)).astype(np.float64)
    excess = np.maximum(np.abs(a - b) - 2 * ulp, 0.0)
    scale = max(float(np.max(np.abs(b - o))), 1e-30)
    self.items[name] = {
      'kind': 'update',
      'max_abs': float(np.max(np.abs(a - b))),
      'max_rel': float(np.max(excess)) / scale,
    }

  def summary(self):
    """Pass/fail and the worst item of each kind ('grad' and 'update' per
    framework: 'grad/jax' is the JAX step against the float64 one)."""
    worst = {}
    for name, item in self.items.items():
      kind = item['kind']
      if kind in ('grad', 'update'):
        kind = '/'.join(name.split('/')[:2])
      if kind not in worst or item['max_rel'] > worst[kind]['max_rel']:
        worst[kind] = dict(item, name=name)
    failed = sorted(
      n for n, i in self.items.items() if i['max_rel'] > TOLERANCE[i['kind']]
    )
    same = [i for i in self.items.values() if i['kind'] not in FLOAT64_KINDS]
    return {
      'ok': not failed,
      'failed': failed,
      'tolerance': TOLERANCE,
      'worst': worst,
      # torch fp32 vs JAX fp32 (forward, losses, statistics, queues).
      'max_abs': max((i['max_abs'] for i in same), default=0.0),
      'max_rel': max((i['max_rel'] for i in same), default=0.0),
      'compared': len(self.items),
      'items': self.items,
    }


FLOAT64_KINDS = ('grad', 'update')


def float64_copy(peer):
  """The peer, copied, in float64 (parameters, statistics, optimiser state
  and queues): the reference of the gradient comparisons."""
  ref = copy.deepcopy(peer)
  for module in vars(ref).values():
    if isinstance(module, nn.Module):
      module.double()  # in place: the optimiser keeps its parameters
  for state in ref.opt.state.values():
    for k, v in state.items():
      if torch.is_tensor(v) and v.is_floating_point():
        state[k] = v.double()
  for name in ('queue', 'snippet_queue'):
    if hasattr(ref, name):
      setattr(ref, name, getattr(ref, name).double())
  return ref


def _opt_field(opt_state, kind, field):
  """The ``field`` of the optax state of type ``kind`` in a chain."""
  found = [
    x
    for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, kind))
    if isinstance(x, kind)
  ]
  return getattr(found[0], field)


def _compare_step(report, peer, ref, module, old, new_jax, grad_jax, buffer):
  """One step's gradients (``buffer`` of torch's optimiser state; JAX's
  ``grad_jax``) and, for SGD, parameter updates, of the fp32 torch peer and
  the JAX step, against the float64 peer ``ref``; BN statistics torch vs
  JAX. Torch parameter names; ``old``: the common starting point."""
  ref_module = getattr(ref, module)
  module = getattr(peer, module)
  ref_params = dict(ref_module.named_parameters())
  current, ref_current = module.state_dict(), ref_module.state_dict()
  sgd = isinstance(peer.opt, torch.optim.SGD)
  for name, param in module.named_parameters():
    if ZERO_GRADIENT.search(name):
      continue
    g64 = ref.opt.state[ref_params[name]][buffer]
    report.add('grad', f'grad/jax/{name}', grad_jax[name], g64)
    report.add('grad', f'grad/torch/{name}', peer.opt.state[param][buffer], g64)
    if sgd:
      for who, new in (('jax', new_jax[name]), ('torch', current[name])):
        report.add_update(
          f'update/{who}/{name}', new, ref_current[name], old[name]
        )
  for name, _ in module.named_buffers():
    if name.endswith(('running_mean', 'running_var')):
      report.add('state', f'state/{name}', current[name], new_jax[name])


# Jitted helpers per (config or graphdef) object, kept alive with it, so
# that repeated checks do not compile again.
_JITTED = {}


def _cached(owner, build):
  entry = _JITTED.get(id(owner))
  if entry is None or entry[0] is not owner:
    entry = _JITTED[id(owner)] = (owner, build())
  return entry[1]


def _jax_forward(graphdef, params, stats, x):
  """The model's train-mode forward (the step's BN mode), without keeping
  its BN updates."""

  def build():
    def fn(params, stats, x):
      return nnx.merge(graphdef, params, stats, copy=True)(x, train=True)

    return jax.jit(fn)

  return _cached(graphdef, build)(params, stats, x)


def _jax_views(cfg, batch, keys):
  """The augmented views of ``pretrain.make_views`` (the step's own)."""
  build = lambda: jax.jit(lambda b, k: pretrain.make_views(b, k, cfg))
  return _cached(cfg, build)(batch, keys)[0]


def _finish(report, what, strict, module, **extra):
  summary = report.summary()
  summary.update(extra)
  summary['ok'] = summary['ok'] and all(extra.values())
  summary['excluded_zero_gradient'] = sorted(
    n for n, _ in module.named_parameters() if ZERO_GRADIENT.search(n)
  )
  if strict and not summary['ok']:
    worst = {
      k: f'{v["name"]}: {v["max_rel"]:.2e}' for k, v in summary['worst'].items()
    }
    raise AssertionError(
      f'torch peer and JAX {what} disagree beyond {TOLERANCE}: '
      f'{summary["failed"][:8]} {extra}; worst {worst}'
    )
  return summary


def check_pretrain(cfg, graphdef, state, batch, step_fn, peer, strict=True):
  """Loads ``state`` into ``peer``, compares the query encoder's outputs on
  the step's own query view, then runs one JAX step (``step_fn`` may donate
  ``state``), one peer step and one float64 peer step on the same views and
  compares losses, gradients, updates, BN statistics, the key encoder,
  queues and pointers (``TOLERANCE`` says against what).

  Returns (new JAX state, summary dict). ``strict``: AssertionError when a
  comparison exceeds its tolerance.
  """
  load_pretrain_state(peer, state)
  ref = float64_copy(peer)
  # The views the jitted step will make (same keys, same functions).
  keys = augment.sample_keys(state['rng'], state['step'], batch['index'])
  views = _jax_views(cfg, batch, keys)
  x_q, x_k = (to_torch(views[v]) for v in ('q', 'k'))
  report = Report()
  j = _jax_forward(graphdef, state['params'], state['batch_stats'], views['q'])
  with torch.no_grad():
    glob, snip, pooled = copy.deepcopy(peer.encoder_q)(x_q)
  report.add('forward', 'forward/global', glob, j['global'])
  report.add('forward', 'forward/snippets', snip.transpose(1, 2), j['snippets'])
  report.add(
    'forward',
    'forward/snippet_feats',
    pooled.transpose(1, 2),
    j['snippet_feats'],
  )
  old = {k: v.clone() for k, v in peer.encoder_q.state_dict().items()}
  new_state, metrics = step_fn(state, batch)
  losses = peer.step_on_views(x_q, x_k)
  ref.step_on_views(x_q.double(), x_k.double())
  for name in ('loss', 'loss_global', 'loss_snippet'):
    if name in losses:
      report.add('loss', name, losses[name], metrics[name])
  trace = _opt_field(new_state['opt_state'], optax.TraceState, 'trace')
  _compare_step(
    report,
    peer,
    ref,
    'encoder_q',
    old,
    encoder_state_dict(new_state['params'], new_state['batch_stats']),
    encoder_state_dict(trace, None),
    'momentum_buffer',
  )
  key = encoder_state_dict(
    new_state['key_params'], new_state['key_batch_stats']
  )
  for name, value in peer.encoder_k.state_dict().items():
    if name in key and not name.endswith('num_batches_tracked'):
      report.add('state', f'state/key/{name}', value, key[name])
  report.add('state', 'state/queue', peer.queue, new_state['queue'])
  report.add(
    'state',
    'state/snippet_queue',
    peer.snippet_queue,
    new_state['snippet_queue'],
  )
  pointers = peer.queue_ptr == int(new_state['queue_ptr']) and (
    peer.snippet_queue_ptr == int(new_state['snippet_queue_ptr'])
  )
  summary = _finish(
    report,
    'pretraining steps',
    strict,
    peer.encoder_q,
    pointers_equal=pointers,
  )
  return new_state, summary


def check_finetune(cfg, graphdef, state, batch, step_fn, peer, strict=True):
  """As ``check_pretrain`` for the finetune step: frame logits, loss,
  gradients and BN statistics after one step each."""
  load_finetune_state(peer, state)
  ref = float64_copy(peer)
  x, labels = to_torch(batch['x']), to_torch(batch['labels'], torch.long)
  report = Report()
  logits = _jax_forward(
    graphdef, state['trainable'], state['batch_stats'], batch['x']
  )
  with torch.no_grad():
    t_logits = copy.deepcopy(peer.model)(x)
  report.add('forward', 'forward/logits', t_logits.transpose(1, 2), logits)
  old = {k: v.clone() for k, v in peer.model.state_dict().items()}
  new_state, metrics = step_fn(state, batch)
  losses = peer.step(x, labels)
  ref.step(x.double(), labels)
  report.add('loss', 'loss', losses['loss'], metrics['loss'])
  mu = _opt_field(new_state['opt_state'], optax.ScaleByAdamState, 'mu')
  _compare_step(
    report,
    peer,
    ref,
    'model',
    old,
    localizer_state_dict(new_state['trainable'], new_state['batch_stats']),
    localizer_state_dict(mu, None),
    'exp_avg',
  )
  return new_state, _finish(report, 'finetune steps', strict, peer.model)


# ---------------------------------------------------------------------------
# Measurement helpers.
# ---------------------------------------------------------------------------
def matmul_gflops(n=2048, repeats=5):
  """Best fp32 GFLOP/s of an n x n x n torch matmul (2 n^3 flops)."""
  a, b = torch.randn(n, n), torch.randn(n, n)
  torch.mm(a, b)
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    torch.mm(a, b)
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best / 1e9


def matmul_flops_of(fn):
  """Matmul and convolution FLOPs of one call of ``fn`` (forward and
  backward), from torch's FlopCounterMode: elementwise work not counted."""
  from torch.utils.flop_counter import FlopCounterMode

  with FlopCounterMode(display=False) as counter:
    fn()
  return int(counter.get_total_flops())


def to_torch(x, dtype=None):
  t = torch.from_numpy(np.array(x))
  return t if dtype is None else t.to(dtype)


def jax_scalar_fn(schedule):
  """A Python ``step -> lr`` from a JAX schedule (evaluated on the host)."""
  return lambda step: float(schedule(jnp.asarray(step)))
