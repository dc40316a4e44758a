"""Trained weights without the training that made them.

A backbone comes from a pretraining or finetuning workdir (its checkpoints
and recorded config) or from an export (``skel_jax.export``: a standalone
checkpoint plus ``model.json``). Only the arrays asked for are read
(``checkpoint.restore_subtree``) and only the backbone module is built, from
the config the run recorded, so nothing here builds an optimizer or imports
a training stage.

Where the model's weights live in a workdir's checkpoint:
  pretrain : ``params`` / ``batch_stats`` (the query encoder; the key
             encoder is ``key_params`` / ``key_batch_stats``);
  finetune : ``trainable`` and ``frozen`` (the protocol's split of the
             localizer's parameters, ``frozen`` empty when everything
             trains) and ``batch_stats``.

  from skel_jax import weights
  backbone = weights.load_backbone('exports/snipclr')   # or a workdir
"""

import json
import os

import ml_collections
from flax import nnx

from skel_jax import checkpoint
from skel_jax import run_record
from skel_jax.models import build_backbone

DESCRIPTION_FILE = 'model.json'
EXPORT_CHECKPOINT = 'checkpoint'
# stage -> the checkpoint keys whose (deep-merged) trees are the model's
# parameters, and the key of its BatchNorm statistics.
PARAM_KEYS = {'pretrain': ('params',), 'finetune': ('trainable', 'frozen')}
STATS_KEY = 'batch_stats'


def is_export(path):
  return os.path.exists(os.path.join(path, DESCRIPTION_FILE))


def read_config(workdir):
  """The config the workdir's checkpoints were written under (config.json
  plus the changes a run accepted with --allow_config_change)."""
  config = run_record.effective_config(workdir)
  if config is None:
    path = os.path.join(workdir, run_record.CONFIG_FILE)
    raise FileNotFoundError(f'{path} not found: not a skel_jax workdir')
  return ml_collections.ConfigDict(config)


def read_description(path):
  """An export's ``model.json``."""
  with open(os.path.join(path, DESCRIPTION_FILE)) as f:
    return json.load(f)


def source_problem(path, model_cfg):
  """Why ``path`` (a workdir or an export) cannot give ``model_cfg`` its
  backbone, in one line; None when it can. Reads only small files (configs,
  descriptions, the checkpoint listing), so config validation can call it.
  """
  try:
    if is_export(path):
      kind, source = 'export', read_description(path).get('model', {})
      if not os.path.isdir(os.path.join(path, EXPORT_CHECKPOINT)):
        return 'an export without its checkpoint/ folder'
    elif os.path.isdir(os.path.join(path, 'checkpoints')):
      kind, config = 'checkpoint', run_record.effective_config(path)
      if config is None:
        return 'checkpoints/ but no config.json: not a skel_jax workdir'
      if config.get('stage') not in PARAM_KEYS:
        return f'stage {config.get("stage")!r} workdir has no backbone'
      source = config.get('model', {})
      if not any(
        d.isdigit() for d in os.listdir(os.path.join(path, 'checkpoints'))
      ):
        return 'no checkpoint in its checkpoints/ yet (did its run save one?)'
    else:
      return (
        'no checkpoints/ or model.json there (expected a pretraining '
        'workdir or a skel_jax.export folder)'
      )
  except (OSError, ValueError) as e:  # unreadable JSON or listing
    return f'unreadable ({type(e).__name__}: {e})'
  have, want = source.get('backbone', {}), model_cfg.backbone.to_dict()
  differ = [k for k in ('name', 'width') if have.get(k) != want.get(k)]
  differ += [
    k
    for k in sorted(set(have) & set(want) - {'name', 'width'})
    if have[k] != want[k]
  ]
  if differ:
    return '; '.join(
      f'backbone {k} {have.get(k)} in the {kind}, {want.get(k)} in the config'
      for k in differ
    ) + (
      ' (set --config.model.backbone.'
      f'{differ[0]}={have.get(differ[0])} to use it)'
    )
  return None


def _merge(trees):
  """Deep merge of nested dicts (None entries skipped): the finetuning
  state's ``frozen`` and ``trainable`` parts give the whole parameter tree
  (``finetune.join_params``)."""
  out = {}
  for tree in trees:
    if tree is None:
      continue
    for key, value in tree.items():
      if isinstance(value, dict) and isinstance(out.get(key), dict):
        out[key] = _merge([out[key], value])
      else:
        out[key] = value
  return out


def restore_workdir(workdir, backbone_only=False):
  """(config, step, params, batch_stats) of a pretraining or finetuning
  workdir: the recorded config and the model's parameters and BN statistics
  (nested dicts of arrays, as ``nnx.to_pure_dict`` gives) of its newest
  readable checkpoint; with ``backbone_only`` just their ``backbone``
  entries. Nothing else of the checkpoint is read.

  The backbone's shapes are checked against the recorded config
  (``checkpoint.CheckpointMismatchError`` naming each mismatch).
  """
  config = read_config(workdir)
  if config.stage not in PARAM_KEYS:
    raise ValueError(f'{workdir}: stage {config.stage!r} has no checkpoint')
  keys = PARAM_KEYS[config.stage]
  sub = ('backbone',) if backbone_only else ()
  prefixes = ['/'.join((k,) + sub) for k in keys]
  if len(keys) == 1:  # pretraining: ``params`` holds it all
    optional = ()
  elif backbone_only:  # in ``trainable`` (finetune) or ``frozen`` (probes)
    optional = prefixes
  else:  # ``frozen`` is empty when everything trains
    optional = prefixes[1:]
  step, trees = checkpoint.restore_subtrees(
    workdir,
    prefixes + ['/'.join((STATS_KEY,) + sub)],
    optional=optional,
  )
  params, stats = _merge(trees[:-1]), trees[-1]
  if backbone_only:
    if not params:
      raise checkpoint.MissingSubtreeError(
        f'{workdir}: checkpoint step {step} has no backbone parameters '
        f'under {" or ".join(prefixes)}; it holds: '
        + ', '.join(
          p for k in keys for p in checkpoint.stored_keys(workdir, k, step)
        )
      )
    params, stats = {'backbone': params}, {'backbone': stats}
  check_backbone(config.model, params['backbone'], stats['backbone'], workdir)
  return config, step, params, stats


def load_variables(path):
  """(description, params, batch_stats) of an export, as nested dicts of
  arrays."""
  desc = read_description(path)
  try:
    tree = checkpoint.restore_tree(os.path.join(path, EXPORT_CHECKPOINT))
  except Exception as e:  # pylint: disable=broad-except
    # One line instead of a tensorstore dump.
    raise checkpoint.NoReadableCheckpointError(
      f'export {path} is unreadable ({checkpoint._short(e)}); export it '  # pylint: disable=protected-access
      'again'
    ) from e
  tree = _int_keys(tree)
  return desc, tree['params'], tree['batch_stats']


def _int_keys(tree):
  """Orbax stores dict keys as strings; NNX list entries are integers."""
  if isinstance(tree, dict):
    return {
      int(k) if isinstance(k, str) and k.isdigit() else k: _int_keys(v)
      for k, v in tree.items()
    }
  return tree


def backbone_variables(path):
  """(params, batch_stats) of the backbone (nested dicts of arrays) of an
  export or of a pretraining / finetuning workdir."""
  if is_export(path):
    _, params, stats = load_variables(path)
  else:
    _, _, params, stats = restore_workdir(path, backbone_only=True)
  return params['backbone'], stats['backbone']


def model_config(path):
  """The model config of an export or a workdir (``config.model``)."""
  if is_export(path):
    return ml_collections.ConfigDict(read_description(path)['model'])
  return read_config(path).model


def load_backbone(path):
  """The backbone of an export or a workdir as an NNX module holding its
  trained weights."""
  params, stats = backbone_variables(path)
  return backbone_with(model_config(path), params, stats, source=path)


def _pure(tree):
  return nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree


def check_backbone(model_cfg, params, batch_stats, source='weights'):
  """Raises ``checkpoint.CheckpointMismatchError`` naming ``source`` and
  every array whose shape differs from the backbone of ``model_cfg`` (built
  abstractly: no weights allocated)."""
  abstract = nnx.eval_shape(
    lambda: build_backbone(model_cfg.backbone, nnx.Rngs(0))
  )
  _, p, s = nnx.split(abstract, nnx.Param, nnx.BatchStat)
  try:
    checkpoint.check_same_shapes(source, nnx.to_pure_dict(p), _pure(params))
    checkpoint.check_same_shapes(
      source, nnx.to_pure_dict(s), _pure(batch_stats)
    )
  except ValueError as e:
    raise checkpoint.CheckpointMismatchError(str(e)) from None


def backbone_with(model_cfg, params, batch_stats, source='weights'):
  """A backbone module of ``model_cfg`` holding ``params`` / ``batch_stats``
  (nested dicts or nnx states of the backbone subtree); a shape mismatch
  names ``source``."""
  params, batch_stats = _pure(params), _pure(batch_stats)
  # Abstract: every value is replaced below, so no initializer runs.
  backbone = nnx.eval_shape(
    lambda: build_backbone(model_cfg.backbone, nnx.Rngs(0))
  )
  graphdef, p, s = nnx.split(backbone, nnx.Param, nnx.BatchStat)
  checkpoint.check_same_shapes(source, nnx.to_pure_dict(p), params)
  checkpoint.check_same_shapes(source, nnx.to_pure_dict(s), batch_stats)
  nnx.replace_by_pure_dict(p, params)
  nnx.replace_by_pure_dict(s, batch_stats)
  return nnx.merge(graphdef, p, s)
