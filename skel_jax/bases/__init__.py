"""Base methods of contrastive pretraining, one module each.

``REGISTRY`` maps ``config.pretrain.base`` to its ``Base`` (``base.py`` says
what a base owns). Adding a base: one module here with a ``BASE``, one line
below, and its tests (docs/method.md, "Adding a base method").
"""

from skel_jax.bases import aimclr
from skel_jax.bases import rvtclr
from skel_jax.bases import skeletonclr
from skel_jax.bases.base import Base
from skel_jax.bases.base import Contrast

REGISTRY = {b.name: b for b in (skeletonclr.BASE, aimclr.BASE, rvtclr.BASE)}

# Every loss term any base reports, in a fixed order (the non-finite record
# of a checkpoint stores an index into it).
LOSS_TERMS = tuple(
  dict.fromkeys(
    ('loss_global', 'loss_snippet')
    + tuple(t for b in REGISTRY.values() for t in b.loss_terms)
  )
)


def get(name):
  if name not in REGISTRY:
    raise ValueError(
      f'unknown base method {name!r}; expected one of {sorted(REGISTRY)}'
    )
  return REGISTRY[name]


__all__ = ['Base', 'Contrast', 'REGISTRY', 'LOSS_TERMS', 'get']
