r"""Exports a trained backbone (optionally with its heads) for transfer.

  python -m skel_jax.export --workdir=runs/pretrain_synthetic --out=exports/snipclr
  python -m skel_jax.export --workdir=runs/finetune_synthetic --out=exports/loc \
      --include_heads

The export is a standalone Orbax checkpoint (plain nested dicts of arrays) plus
``model.json`` describing the architecture and the expected preprocessing.
Finetuning configs accept an export dir as ``pretrain_workdir``; in Python
(``skel_jax.weights``, which also reads workdirs):

  from skel_jax import weights
  backbone = weights.load_backbone('exports/snipclr')
  features = backbone(x, train=False)   # x: (B, T, 25, 3); persons folded into B
"""

import json
import os

from absl import app
from absl import flags

from skel_jax import checkpoint
from skel_jax import train_utils
from skel_jax import weights

FORMAT_VERSION = 1


def export(workdir, out, include_heads=False):
  config, step, params, stats = weights.restore_workdir(
    workdir, backbone_only=not include_heads
  )
  keep = lambda tree: {
    k: v for k, v in tree.items() if include_heads or k == 'backbone'
  }
  tree = {'params': keep(params), 'batch_stats': keep(stats)}
  os.makedirs(out, exist_ok=True)
  checkpoint.save_tree(os.path.join(out, weights.EXPORT_CHECKPOINT), tree)
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
  with open(os.path.join(out, weights.DESCRIPTION_FILE), 'w') as f:
    json.dump(description, f, indent=2)
  print(f'[export] {workdir} step {step} -> {out} ({description["includes"]})')
  return out


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
