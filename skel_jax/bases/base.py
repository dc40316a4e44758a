"""What a base method is: the contract between ``skel_jax.pretrain``'s step and
the modules of this package (docs/method.md, "Adding a base method").

The step owns everything bases share: momentum update, the key and query
encoders, the global bank (queue or in-batch keys), mining, the dense snippet
loss, the queues and the non-finite guard. A base owns what differs: its
release settings, its extra views, which views each encoder sees (and in which
order, which fixes the BatchNorm running-statistics updates), which key view is
enqueued, and its losses.
"""

import dataclasses
from typing import Any
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Contrast:
  """What a base's ``losses`` may use from the step.

  logits(query_out, key_out) -> (pos, neg): the global head's logits of a query
    view against its key view and the bank (queue or in-batch keys);
  logits_of(query_vec, key_vec): the same for raw embeddings;
  mined(*negs): extra positives (top-k of each negative set, unioned; None
    when the run never mines; all-False before the mining step);
  temperature, pcfg: the pretraining config.
  """

  logits: Callable
  logits_of: Callable
  mined: Callable
  temperature: float
  pcfg: Any


@dataclasses.dataclass(frozen=True)
class Base:
  """One base method (see the module docstring).

  name: the ``pretrain.base`` value (and the config variant token).
  title: the method's name in listings.
  release: the release's settings, applied by ``config_defaults.set_base``:
    mining_epoch, query_strong (strong query augmentation), num_epochs and
    lr_decay_epochs (the release's schedule).
  query_views / key_views: views each encoder runs, in call order.
  view_modes: encoder mode per view ('main' when absent; see MoCoEncoder).
  enqueued_view: the key view whose embeddings enter the queues and serve as
    the in-batch bank (and as the snippet loss's keys).
  loss_terms: loss names the base reports besides loss_global/loss_snippet.
  encoder: keyword options of ``models.MoCoEncoder``.
  add_views(batch, keys, config, views, frames) -> (views, frames): adds the
    base's views to the two standard ones ('q', 'k') and their frame maps.
  losses(q_out, k_out, contrast) -> (total, metrics): the base's loss,
    metrics holding 'loss_global' and every name of ``loss_terms``.
  view_frames(clip_len, pcfg) -> frames of the query/key views (what the
    snippets must fit into; config validation reads it).
  check(pcfg, fail): base-specific config checks, ``fail(key, value, why)``.
  """

  name: str
  title: str
  release: dict
  query_views: tuple
  key_views: tuple
  enqueued_view: str
  losses: Callable
  view_modes: dict = dataclasses.field(default_factory=dict)
  loss_terms: tuple = ()
  encoder: dict = dataclasses.field(default_factory=dict)
  add_views: Callable = lambda batch, keys, config, views, frames: (
    views,
    frames,
  )
  view_frames: Callable = lambda clip_len, pcfg: clip_len
  check: Callable = lambda pcfg, fail: None
