r"""Exports a trained backbone (optionally with its heads) for transfer.

  python -m skel_jax.export --workdir=runs/pretrain_synthetic --out=exports/snipclr
  python -m skel_jax.export --workdir=runs/finetune_synthetic --out=exports/loc \
      --include_heads

The export is a standalone Orbax checkpoint (plain nested dicts of arrays) plus
``model.json`` describing the architecture and the expected preprocessing.
Finetuning configs accept an export dir as ``pretrain_workdir``; in Python:

  from skel_jax import export
  backbone = export.load_backbone('exports/snipclr')
  features = backbone(x, train=False)   # x: (B, T, 25, 3); persons folded into B
"""

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import app
from absl import flags
from flax import nnx

from skel_jax import checkpoint
from skel_jax import optim
from skel_jax import train_utils
from skel_jax.models import build_backbone

FORMAT_VERSION = 1


def _read_config(workdir):
  """The config the workdir's checkpoints were written under (config.json
  plus the changes a run accepted with --allow_config_change)."""
  from skel_jax import run_record  # pylint: disable=g-import-not-at-top

  config = run_record.effective_config(workdir)
  if config is None:
    path = os.path.join(workdir, run_record.CONFIG_FILE)
    raise FileNotFoundError(f'{path} not found: not a skel_jax workdir')
  return ml_collections.ConfigDict(config)


def source_problem(path, model_cfg):
  """Why ``path`` (a workdir or an export) cannot give ``model_cfg`` its
  backbone, in one line; None when it can. Reads only small files (configs,
  descriptions, the checkpoint listing), so config validation can call it.
  """
  from skel_jax import run_record  # pylint: disable=g-import-not-at-top

  try:
    if os.path.exists(os.path.join(path, 'model.json')):
      kind, source = 'export', read_description(path).get('model', {})
      if not os.path.isdir(os.path.join(path, 'checkpoint')):
        return 'an export without its checkpoint/ folder'
    elif os.path.isdir(os.path.join(path, 'checkpoints')):
      kind, config = 'checkpoint', run_record.effective_config(path)
      if config is None:
        return 'checkpoints/ but no config.json: not a skel_jax workdir'
      if config.get('stage') not in ('pretrain', 'finetune'):
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


def restore_workdir(workdir):
  """(config, step, params, batch_stats) of a pretraining or finetuning workdir."""
  from skel_jax import finetune  # pylint: disable=g-import-not-at-top
  from skel_jax import pretrain  # pylint: disable=g-import-not-at-top

  config = _read_config(workdir)
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoint under {directory}')
  # Read-only: another run's workdir is never written or pruned.
  ckpt = checkpoint.Checkpointer(directory, read_only=True)
  if not ckpt.all_steps():
    raise FileNotFoundError(f'no checkpoint under {directory}')
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  if config.stage == 'pretrain':
    tx = optim.make_optimizer(config.optimizer, lambda s: 0.0)
    abstract = jax.eval_shape(lambda: pretrain.init_state(config, tx)[1])
    # The newest readable step (older ones after a warning naming it).
    step, state, _ = ckpt.restore_readable(
      checkpoint.abstract_like(abstract, sharding), workdir
    )
    params, stats = state['params'], state['batch_stats']
  elif config.stage == 'finetune':
    tx = optim.make_optimizer(config.optimizer, lambda s: 0.0)
    abstract = jax.eval_shape(
      lambda: finetune.initial_state(
        config, tx, config.model.num_classes, restore_backbone=False
      )[1]
    )
    step, state, _ = ckpt.restore_readable(
      checkpoint.abstract_like(abstract, sharding), workdir
    )
    params = finetune.join_params(
      state['trainable'], state['frozen'], config.protocol
    )
    stats = state['batch_stats']
  else:
    raise ValueError(f'{workdir}: stage {config.stage!r} has no checkpoint')
  ckpt.close()
  return config, step, params, stats


def export(workdir, out, include_heads=False):
  config, step, params, stats = restore_workdir(workdir)
  keep = lambda tree: {
    k: v
    for k, v in nnx.to_pure_dict(tree).items()
    if include_heads or k == 'backbone'
  }
  tree = {'params': keep(params), 'batch_stats': keep(stats)}
  os.makedirs(out, exist_ok=True)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.abspath(os.path.join(out, 'checkpoint')), tree, force=True)
  ckptr.wait_until_finished()
  description = {
    'format_version': FORMAT_VERSION,
    'model': config.model.to_dict(),
    'includes': sorted(tree['params']),
    'input': {
      'layout': '(N, M, T, V=25, 3) skeletons; persons folded into '
      'the batch for the backbone: (N*M, T, 25, 3)',
      'joints': 'NTU RGB+D 25 (Kinect v2 order)',
      'normalization': 'plain: origin = spine-mid of person 0 at '
      'frame 0 (skel_jax.input_pipeline)',
      'clip_len': config.data.get('clip_len'),
      'dataset': f'{config.data.name}/{config.data.config}',
    },
    'source': {
      'workdir': os.path.abspath(workdir),
      'stage': config.stage,
      'step': int(step),
      'seed': config.seed,
    },
    'versions': train_utils.versions(),
  }
  with open(os.path.join(out, 'model.json'), 'w') as f:
    json.dump(description, f, indent=2)
  print(f'[export] {workdir} step {step} -> {out} ({description["includes"]})')
  return out


def read_description(path):
  with open(os.path.join(path, 'model.json')) as f:
    return json.load(f)


def _int_keys(tree):
  """Orbax stores dict keys as strings; NNX list entries are integers."""
  if isinstance(tree, dict):
    return {
      int(k) if isinstance(k, str) and k.isdigit() else k: _int_keys(v)
      for k, v in tree.items()
    }
  return tree


def load_variables(path):
  """(description, params, batch_stats) as nested dicts of arrays."""
  desc = read_description(path)
  ckptr = ocp.StandardCheckpointer()
  try:
    tree = _int_keys(
      ckptr.restore(os.path.abspath(os.path.join(path, 'checkpoint')))
    )
  except Exception as e:  # pylint: disable=broad-except
    # One line instead of a tensorstore dump.
    raise checkpoint.NoReadableCheckpointError(
      f'export {path} is unreadable ({checkpoint._short(e)}); export it '  # pylint: disable=protected-access
      'again'
    ) from e
  return desc, tree['params'], tree['batch_stats']


def load_backbone(path):
  """The exported backbone as an NNX module with its trained weights."""
  desc, params, stats = load_variables(path)
  model_cfg = ml_collections.ConfigDict(desc['model'])
  return backbone_with(
    model_cfg, params['backbone'], stats['backbone'], source=path
  )


def backbone_with(model_cfg, params, batch_stats, source='weights'):
  """A backbone module of ``model_cfg`` holding ``params`` / ``batch_stats``
  (nested dicts or nnx states of the backbone subtree); a shape mismatch
  names ``source``."""
  pure = lambda t: nnx.to_pure_dict(t) if isinstance(t, nnx.State) else t
  params, batch_stats = pure(params), pure(batch_stats)
  backbone = build_backbone(model_cfg.backbone, nnx.Rngs(0))
  graphdef, p, s = nnx.split(backbone, nnx.Param, nnx.BatchStat)
  checkpoint.check_same_shapes(source, nnx.to_pure_dict(p), params)
  checkpoint.check_same_shapes(source, nnx.to_pure_dict(s), batch_stats)
  nnx.replace_by_pure_dict(p, params)
  nnx.replace_by_pure_dict(s, batch_stats)
  return nnx.merge(graphdef, p, s)


def main(argv):
  del argv
  from skel_jax import cli  # pylint: disable=g-import-not-at-top

  cli.apply_verbosity()  # Orbax logs ~60 INFO lines per restore
  f = flags.FLAGS
  export(f.workdir, f.out, f.include_heads)


if __name__ == '__main__':
  # Flags live here so importing this module never clashes with main.py's.
  from skel_jax import cli  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string(
    'workdir',
    None,
    'Run directory to export (input): a pretraining or finetuning '
    '--workdir of skel_jax.main.',
  )
  flags.DEFINE_string('out', None, 'Export directory (output).')
  cli.extend_help(only=False)
  flags.DEFINE_bool(
    'include_heads',
    False,
    'Also export the heads (MoCo/snippet or localization).',
  )
  flags.mark_flags_as_required(['workdir', 'out'])
  app.run(main)
