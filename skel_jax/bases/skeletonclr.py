"""SkeletonCLR (MoCo v2 on skeletons): InfoNCE between a query and a key view.

As in the SnipCLR release, the query view adds the strong augmentations
(noise, blur, axis mask); the schedule is 600 epochs, x0.1 at 550.
"""

from skel_jax import losses
from skel_jax.bases.base import Base


def _losses(q_out, k_out, c):
  pos, neg = c.logits(q_out['q'], k_out['k'])
  total = losses.info_nce(pos, neg, c.temperature, c.mined(neg))
  return total, {'loss_global': total}


BASE = Base(
  name='skeletonclr',
  title='SkeletonCLR',
  release={
    'mining_epoch': -1,
    'query_strong': True,
    'num_epochs': 600,
    'lr_decay_epochs': (550,),
  },
  query_views=('q',),
  key_views=('k',),
  enqueued_view='k',
  losses=_losses,
)
