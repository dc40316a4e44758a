"""Flax NNX models: graph-convolutional backbones, pretraining heads, localization heads."""

from skel_jax.models.agcn import AGCN
from skel_jax.models.agcn import AGCN_CHANNELS
from skel_jax.models.agcn import AGCN_STRIDES
from skel_jax.models.encoders import BACKBONES
from skel_jax.models.encoders import HEADS
from skel_jax.models.encoders import Localizer
from skel_jax.models.encoders import MoCoEncoder
from skel_jax.models.encoders import build_backbone
from skel_jax.models.heads import GlobalHead
from skel_jax.models.heads import SnippetHead
from skel_jax.models.heads import UFusionHead
from skel_jax.models.heads import UpsampleHead
from skel_jax.models.stgcn import STGCN

__all__ = [
  'AGCN',
  'AGCN_CHANNELS',
  'AGCN_STRIDES',
  'BACKBONES',
  'HEADS',
  'MoCoEncoder',
  'Localizer',
  'build_backbone',
  'GlobalHead',
  'SnippetHead',
  'UFusionHead',
  'UpsampleHead',
  'STGCN',
]
