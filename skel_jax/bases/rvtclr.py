"""RVTCLR, as in the SnipCLR example: relative-tempo query and key views
(one at full speed, one at ``tempo_ratio``x), a tempo ranking loss, a
cross-tempo InfoNCE, and a distribution-consistency (DC) view through the
part-relation branch. Mining from epoch 200 of 600.
"""

import jax.numpy as jnp

from skel_jax import augment
from skel_jax import losses
from skel_jax.bases.base import Base


def _add_views(batch, keys, config, views, frames):
  ratio = config.pretrain.tempo_ratio
  views['dc'] = augment.third_view(batch['x'], keys, config.augment, 'normal')
  views['q'], views['k'], views['k_other'] = augment.relative_tempo(
    views['q'], views['k'], keys, ratio
  )
  frames['q'], frames['k'], frames['k_other'] = augment.relative_tempo_frames(
    frames['q'], frames['k'], keys, ratio
  )
  return views, frames


def _losses(q_out, k_out, c):
  """InfoNCE(q, k) + InfoNCE(q, k_other) + tempo margin ranking (q.k >
  q.k_other on the tempo head) + DDM(dc view)."""
  t, q, k, other = c.temperature, q_out['q'], k_out['k'], k_out['k_other']
  pos, neg = c.logits(q, k)
  pos_dc, neg_dc = c.logits(q_out['dc'], k)
  extra = c.mined(neg, neg_dc)
  metrics = {'loss_global': losses.info_nce(pos, neg, t, extra)}
  pos_x = jnp.sum(q['global'] * other['global'], -1)
  metrics['loss_cross_tempo'] = losses.info_nce(pos_x, neg, t, extra)
  metrics['loss_tempo_rank'] = losses.margin_ranking_loss(
    jnp.sum(q['tempo'] * k['tempo'], -1),
    jnp.sum(q['tempo'] * other['tempo'], -1),
    c.pcfg.tempo_margin,
    t,
  )
  # The release leaves the DC positive logit undivided by T before the
  # mining epoch (a commented-out line) and divides it after; always here.
  metrics['loss_ddm'] = losses.soft_target_loss(pos_dc, neg_dc, pos, neg, t)
  total = sum(
    metrics[name]
    for name in (
      'loss_global',
      'loss_cross_tempo',
      'loss_tempo_rank',
      'loss_ddm',
    )
  )
  return total, metrics


def _check(pcfg, fail):
  if pcfg.tempo_ratio < 2:
    fail('pretrain.tempo_ratio', pcfg.tempo_ratio, 'expected >= 2')


BASE = Base(
  name='rvtclr',
  title='RVTCLR',
  release={
    'mining_epoch': 200,
    'query_strong': True,
    'num_epochs': 600,
    'lr_decay_epochs': (550,),
  },
  query_views=('q', 'dc'),
  view_modes={'dc': 'dc'},
  # The release encodes the other-tempo key first (BN running statistics are
  # updated in call order) and enqueues it.
  key_views=('k_other', 'k'),
  enqueued_view='k_other',
  loss_terms=('loss_cross_tempo', 'loss_tempo_rank', 'loss_ddm'),
  encoder={'relative_tempo_heads': True},
  add_views=_add_views,
  losses=_losses,
  # The query/key views keep clip_len / tempo_ratio frames.
  view_frames=lambda clip_len, pcfg: clip_len // pcfg.tempo_ratio,
  check=_check,
)
