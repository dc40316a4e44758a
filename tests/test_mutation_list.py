"""scripts/mutation_check.py stays runnable: every planted bug still finds
its original text (once) in its file and names tests that exist. (Running
the mutations is not part of the suite: see the script.)"""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mutations():
  path = os.path.join(ROOT, 'scripts', 'mutation_check.py')
  spec = importlib.util.spec_from_file_location('mutation_check', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.MUTATIONS


def test_every_mutation_targets_current_code_and_existing_tests():
  stale = []
  for m in _mutations():
    with open(os.path.join(ROOT, m.path)) as f:
      count = f.read().count(m.original)
    if count != 1:
      stale.append(f'{m.name}: original found {count} times in {m.path}')
    for test in m.tests:
      file, _, name = test.partition('::')
      with open(os.path.join(ROOT, file)) as f:
        if name and f'def {name}(' not in f.read():
          stale.append(f'{m.name}: no test {test}')
  assert not stale, '\n'.join(stale)
