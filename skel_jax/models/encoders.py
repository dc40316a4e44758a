"""Full models: the MoCo encoder used in pretraining and the frame-level localizer.

Inputs are skeleton batches (N, M, T, V, 3): persons M are folded into the
batch for the backbone and averaged after pooling over joints.
"""

import dataclasses
import math
from typing import Callable

import jax.numpy as jnp
from flax import nnx

from skel_jax.models.agcn import AGCN
from skel_jax.models.agcn import AGCN_STRIDES
from skel_jax.models.heads import GlobalHead
from skel_jax.models.heads import PartRelationBranch
from skel_jax.models.heads import SnippetHead
from skel_jax.models.heads import UFusionHead
from skel_jax.models.heads import UpsampleHead
from skel_jax.models.heads import energy_attention_drop
from skel_jax.models.stgcn import STGCN
from skel_jax.models.stgcn import STGCN_STRIDES

# model.head -> localization head class.
HEADS = {'ufusion': UFusionHead, 'upsample': UpsampleHead}


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """build(cfg, rngs) -> module returning every unit's output; ``strides``:
  the temporal stride of each unit (taps index units 1..len(strides))."""

  build: Callable
  strides: tuple

  def time_steps(self, frames):
    """Output length of a ``frames``-long input (ceil-divided per stride)."""
    for stride in self.strides:
      frames = math.ceil(frames / stride)
    return frames


# model.backbone.name -> spec; config validation reads the names, the unit
# count (valid taps) and the strides (backbone time steps per clip).
BACKBONES = {
  'agcn': BackboneSpec(
    lambda cfg, rngs: AGCN(width=cfg.width, rngs=rngs), AGCN_STRIDES
  ),
  'stgcn': BackboneSpec(
    lambda cfg, rngs: STGCN(
      width=cfg.width,
      corrected_partition=cfg.get('corrected_partition', False),
      rngs=rngs,
    ),
    STGCN_STRIDES,
  ),
}


def build_backbone(cfg, rngs):
  """cfg: ConfigDict with ``name`` and ``width`` (``BACKBONES``)."""
  if cfg.name not in BACKBONES:
    raise ValueError(
      f'model.backbone.name={cfg.name!r}: expected one of {sorted(BACKBONES)}'
    )
  return BACKBONES[cfg.name].build(cfg, rngs)


def _fold_persons(x):
  n, m, t, v, c = x.shape
  return x.reshape(n * m, t, v, c), (n, m)


def _joint_and_person_mean(feat, nm):
  """(N*M, T, V, C) -> (N, T, C): average over joints, then persons."""
  n, m = nm
  f = jnp.mean(feat, axis=2)
  return jnp.mean(f.reshape(n, m, *f.shape[1:]), axis=1)


class MoCoEncoder(nnx.Module):
  """Backbone + contrastive heads of one base method (query or key encoder).

  Every base has the global head and the dense snippet head. With
  ``relative_tempo_heads`` (RVTCLR, ``bases.rvtclr``) the global
  ("appearance") and tempo heads are single linear layers, as released, and
  the part-relation branch serves the distribution-consistency view.

  ``mode`` picks what a forward pass returns:
    'main'  : global, snippets, snippet_feats (+ tempo for RVTCLR);
    'eadm'  : global and global_drop (AimCLR's extreme view through EADM);
    'dc'    : global from the part-relation branch (RVTCLR's DC view).
  """

  def __init__(self, model_cfg, *, relative_tempo_heads=False, rngs):
    self.backbone = build_backbone(model_cfg.backbone, rngs)
    c, dim = self.backbone.out_channels, model_cfg.feature_dim
    rvt = relative_tempo_heads
    bn = model_cfg.get('head_batch_norm', False)
    self.global_head = GlobalHead(c, dim, mlp=not rvt, batch_norm=bn, rngs=rngs)
    self.snippet_head = SnippetHead(
      c, dim, model_cfg.num_snippets, batch_norm=bn, rngs=rngs
    )
    if rvt:
      self.tempo_head = GlobalHead(c, dim, mlp=False, rngs=rngs)
      self.dc_branch = PartRelationBranch(c, rngs=rngs)
      self.dc_head = GlobalHead(c, dim, batch_norm=bn, rngs=rngs)
    else:
      self.tempo_head = self.dc_branch = self.dc_head = None

  def __call__(self, x, train=True, dropout_key=None, mode='main'):
    xb, nm = _fold_persons(x)
    last = self.backbone(xb, train, dropout_key=dropout_key)[-1]
    if mode == 'dc':
      parts = self.dc_branch(last, train)
      return {'global': self.dc_head(_joint_and_person_mean(parts, nm), train)}
    feat = _joint_and_person_mean(last, nm)
    if mode == 'eadm':
      dropped = _joint_and_person_mean(energy_attention_drop(last), nm)
      return {
        'global': self.global_head(feat, train),
        'global_drop': self.global_head(dropped, train),
      }
    snippet_feats, snippets = self.snippet_head(feat, train)
    out = {
      'global': self.global_head(feat, train),
      'snippets': snippets,
      'snippet_feats': snippet_feats,
    }
    if self.tempo_head is not None:
      out['tempo'] = self.tempo_head(feat)
    return out


class Localizer(nnx.Module):
  """Backbone + per-frame head (U-shaped fusion or the upsampling baseline)."""

  def __init__(self, model_cfg, num_classes, *, rngs):
    self.backbone = build_backbone(model_cfg.backbone, rngs)
    self.taps = tuple(model_cfg.taps)  # 1-based unit indices
    tap_channels = tuple(self.backbone.channels[i - 1] for i in self.taps)
    self.head = HEADS[model_cfg.head](
      tap_channels, model_cfg.head_dim, num_classes + 1, rngs=rngs
    )

  def taps_of(self, x, train, dropout_key=None):
    xb, nm = _fold_persons(x)
    feats = self.backbone(xb, train, dropout_key=dropout_key)
    return [_joint_and_person_mean(feats[i - 1], nm) for i in self.taps]

  def __call__(self, x, train=True, dropout_key=None):
    """x: (N, M, T, V, 3) -> per-frame logits (N, T, K + 1)."""
    return self.head(
      self.taps_of(x, train, dropout_key), train, length=x.shape[2]
    )
