"""AimCLR: normal query and key, plus an extreme view (strong spatial and
temporal augmentations) that learns from the query's similarity distribution
(the DDM loss), once as is and once through the energy-based attention drop
(EADM). Top-1 nearest-neighbour mining from epoch 150 of 300.
"""

from skel_jax import augment
from skel_jax import losses
from skel_jax.bases.base import Base


def _add_views(batch, keys, config, views, frames):
  views['extreme'] = augment.third_view(
    batch['x'], keys, config.augment, 'extreme'
  )
  return views, frames


def _losses(q_out, k_out, c):
  """InfoNCE(q, k) + (DDM(extreme) + DDM(extreme after EADM)) / 2, DDM being
  the cross-entropy to the stopped distribution of q; mined positives of the
  three query views are unioned (the release)."""
  t, q, k, e = c.temperature, q_out['q'], k_out['k'], q_out['extreme']
  pos, neg = c.logits(q, k)
  pos_e, neg_e = c.logits(e, k)
  pos_d, neg_d = c.logits_of(e['global_drop'], k['global'])
  metrics = {
    'loss_global': losses.info_nce(pos, neg, t, c.mined(neg, neg_e, neg_d))
  }
  metrics['loss_ddm'] = 0.5 * (
    losses.soft_target_loss(pos_e, neg_e, pos, neg, t)
    + losses.soft_target_loss(pos_d, neg_d, pos, neg, t)
  )
  return metrics['loss_global'] + metrics['loss_ddm'], metrics


BASE = Base(
  name='aimclr',
  title='AimCLR',
  release={
    'mining_epoch': 150,
    'query_strong': False,
    'num_epochs': 300,
    'lr_decay_epochs': (250,),
  },
  query_views=('q', 'extreme'),
  view_modes={'extreme': 'eadm'},
  key_views=('k',),
  enqueued_view='k',
  loss_terms=('loss_ddm',),
  add_views=_add_views,
  losses=_losses,
)
