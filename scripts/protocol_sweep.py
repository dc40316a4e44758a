r"""Every localization protocol on one pretrained backbone, as one table.

  .venv/bin/python scripts/protocol_sweep.py \
      --pretrain_workdir=runs/demo/pretrain_snippet_moco --out=runs/protocols

Runs configs/finetune_synthetic.py under every protocol (finetune, linear,
linear_fusion, knn) at several label fractions, plus the upsampling baseline
head, and writes ``OUT/protocols.json`` and ``OUT/protocols.md``.
"""

import json
import os

from absl import app
from absl import flags

import configs
from skel_jax import main as main_lib
from skel_jax import protocols
from skel_jax import train_utils

_PRE = flags.DEFINE_string('pretrain_workdir', None, 'Pretraining workdir.')
_OUT = flags.DEFINE_string('out', 'runs/protocols', 'Output directory.')
_FRACTIONS = flags.DEFINE_list(
  'fractions', ['0.05', '0.2', '1.0'], 'Label fractions.'
)
_CONFIG = flags.DEFINE_string(
  'finetune_config',
  'configs/finetune_synthetic.py',
  'Finetuning config: configs/NAME.py[:TOKEN,...] or NAME[:TOKEN,...].',
)


def _config():
  return configs.load(_CONFIG.value)


def main(argv):
  del argv
  train_utils.enable_compilation_cache()
  runs = [
    (p, float(f), 'ufusion')
    for f in _FRACTIONS.value
    for p in protocols.PROTOCOLS
  ]
  runs.append(('finetune', 0.2, 'upsample'))
  rows = []
  for protocol, fraction, head in runs:
    c = _config()
    c.pretrain_workdir = _PRE.value
    c.protocol, c.label_fraction, c.model.head = protocol, fraction, head
    if head == 'upsample':
      c.optimizer.lr = 1e-3  # the released baseline-head learning rate
    name = f'{protocol}_{head}_f{fraction:g}'
    workdir = os.path.join(_OUT.value, name)
    path = os.path.join(workdir, 'results.json')
    if os.path.exists(path):
      with open(path) as f:
        result = json.load(f)
    else:
      result = main_lib.run(c, workdir)
    rows.append(
      {
        'protocol': protocol,
        'head': head,
        'label_fraction': fraction,
        'map': {
          **{str(k): v for k, v in result['iou'].items()},
          'mean': result['mean'],
        },
        'frame_accuracy': result['frame_accuracy'],
      }
    )
  thr = list(rows[0]['map'])[:-1]
  lines = [
    '| protocol | head | labels | '
    + ' | '.join(f'mAP@{t}' for t in thr)
    + ' | mean | frame acc |',
    '|' + '---|' * (len(thr) + 5),
  ]
  for r in rows:
    lines.append(
      f'| {r["protocol"]} | {r["head"]} | {r["label_fraction"]:g} | '
      + ' | '.join(f'{r["map"][t]:.1f}' for t in thr)
      + f' | {r["map"]["mean"]:.1f} | {r["frame_accuracy"]:.3f} |'
    )
  table = '\n'.join(lines)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'protocols.json'), 'w') as f:
    json.dump({'pretrain_workdir': _PRE.value, 'rows': rows}, f, indent=2)
  with open(os.path.join(_OUT.value, 'protocols.md'), 'w') as f:
    f.write(table + '\n')
  print(table)


if __name__ == '__main__':
  flags.mark_flags_as_required(['pretrain_workdir'])
  app.run(main)
