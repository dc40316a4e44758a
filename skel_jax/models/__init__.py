"""Flax NNX models: graph-convolutional backbones, pretraining heads, localization heads."""
from skel_jax.models.agcn import AGCN, AGCN_CHANNELS, AGCN_STRIDES
from skel_jax.models.encoders import MoCoEncoder, Localizer, build_backbone
from skel_jax.models.heads import (GlobalHead, SnippetHead, UFusionHead,
                                   UpsampleHead)
from skel_jax.models.stgcn import STGCN

__all__ = ['AGCN', 'AGCN_CHANNELS', 'AGCN_STRIDES', 'MoCoEncoder', 'Localizer',
           'build_backbone', 'GlobalHead', 'SnippetHead', 'UFusionHead',
           'UpsampleHead', 'STGCN']
