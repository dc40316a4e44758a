"""`python -m skel_jax`: the commands, and what a run on this machine gets."""

import os

from skel_jax import hugepages

COMMANDS = (
  ('main', 'every stage (pretrain, localize, evaluate) from one config'),
  ('study', 'methods x seeds with confidence intervals'),
  ('build_data', 'raw NTU / PKU-MMD / BABEL files -> TFDS datasets'),
  ('evaluate', 'localization mAP of ActivityNet-style JSON files'),
  ('export', 'a trained backbone (and heads) for transfer'),
  ('probe', 'does a frozen backbone encode content or position?'),
  ('bench', 'steps, inference and input pipelines; --vs_torch'),
)

print('commands (python -m skel_jax.NAME --help):')
for name, what in COMMANDS:
  print(f'  {name:11s} {what}')
print(
  f'transparent huge pages: {hugepages.thp_mode()}; '
  f'glibc: {hugepages.glibc_version()}'
)
print(f'GLIBC_TUNABLES={os.environ.get("GLIBC_TUNABLES", "")}')
