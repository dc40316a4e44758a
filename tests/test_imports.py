"""The package's import structure: no import cycles between skel_jax modules
(function-level imports included), and only command-line modules define
absl flags when imported.

Static (``ast``): nothing is imported, so this runs in a second.
"""

import ast
import collections
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'skel_jax'
# The command-line entry points (``python -m skel_jax.NAME``, each with a
# ``__main__`` block); ``main`` defines its flags at import, the others only
# under ``__main__``. Every other module is a library and defines none.
CLI_MODULES = {
  f'{PACKAGE}.{name}'
  for name in (
    'bench',
    'build_data',
    'evaluate',
    'export',
    'main',
    'probe',
    'study',
  )
}


def module_files(root=ROOT, package=PACKAGE):
  """{dotted module name: path} of every .py file of the package."""
  out = {}
  base = os.path.join(root, package)
  for folder, dirs, names in os.walk(base):
    dirs[:] = sorted(d for d in dirs if not d.startswith(('.', '__')))
    for name in sorted(names):
      if not name.endswith('.py'):
        continue
      rel = os.path.relpath(os.path.join(folder, name), root)[:-3]
      parts = rel.split(os.sep)
      if parts[-1] == '__init__':
        parts = parts[:-1]
      out['.'.join(parts)] = os.path.join(folder, name)
  return out


def _is_package(module, path):
  return os.path.basename(path) == '__init__.py'


def _resolve(node, module, is_package):
  """Absolute module named by an ImportFrom (relative ones resolved)."""
  if not node.level:
    return node.module or ''
  parts = module.split('.')
  keep = len(parts) - node.level + (1 if is_package else 0)
  base = parts[:keep]
  return '.'.join(base + ([node.module] if node.module else []))


def imports_of(module, path, modules):
  """The package modules ``module`` imports anywhere in its file (module
  level, functions, ``__main__`` blocks): {imported module: first line}."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  out = {}

  def add(name, line):
    if name in modules and name != module:
      out.setdefault(name, line)

  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        add(alias.name, node.lineno)
    elif isinstance(node, ast.ImportFrom):
      base = _resolve(node, module, _is_package(module, path))
      for alias in node.names:
        sub = f'{base}.{alias.name}'
        # ``from skel_jax import x`` imports module x; ``from
        # skel_jax.models import Localizer`` runs skel_jax/models/__init__.
        add(sub if sub in modules else base, node.lineno)
  return out


def import_graph(root=ROOT, package=PACKAGE):
  modules = module_files(root, package)
  return {m: imports_of(m, p, modules) for m, p in modules.items()}


def _components(graph):
  """Strongly connected components (Tarjan, iterative) of size > 1, or a
  module importing itself."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  counter = [0]

  def visit(start):
    work = [(start, iter(sorted(graph[start])))]
    index[start] = low[start] = counter[0]
    counter[0] += 1
    stack.append(start)
    on_stack.add(start)
    while work:
      node, children = work[-1]
      for child in children:
        if child not in index:
          index[child] = low[child] = counter[0]
          counter[0] += 1
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph[child]))))
          break
        if child in on_stack:
          low[node] = min(low[node], index[child])
      else:
        work.pop()
        if work:
          parent = work[-1][0]
          low[parent] = min(low[parent], low[node])
        if low[node] == index[node]:
          component = []
          while True:
            member = stack.pop()
            on_stack.discard(member)
            component.append(member)
            if member == node:
              break
          if len(component) > 1 or node in graph[node]:
            out.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return out


def _shortest_cycle(graph, start, within):
  """start -> ... -> start, fewest edges, staying inside ``within``."""
  previous = {start: None}
  queue = collections.deque([start])
  while queue:
    node = queue.popleft()
    for child in sorted(graph[node]):
      if child not in within:
        continue
      if child == start:
        path = [node]
        while previous[path[-1]] is not None:
          path.append(previous[path[-1]])
        return [start] + path[::-1][1:] + [start]
      if child not in previous:
        previous[child] = node
        queue.append(child)
  return None


def cycles(graph):
  """One shortest cycle through each module that is on a cycle (rotations
  removed), each as [a, b, ..., a]."""
  found = []
  seen = set()
  for component in _components(graph):
    members = set(component)
    for module in component:
      cycle = _shortest_cycle(graph, module, members)
      if cycle is None:
        continue
      key = frozenset(zip(cycle, cycle[1:]))
      if key not in seen:
        seen.add(key)
        found.append(cycle)
  return found


def describe(graph, cycle):
  short = lambda m: m[len(PACKAGE) + 1 :] if m.startswith(PACKAGE + '.') else m
  return (
    ' -> '.join(
      f'{short(a)} (line {graph[a][b]})' for a, b in zip(cycle, cycle[1:])
    )
    + f' -> {short(cycle[-1])}'
  )


def test_no_import_cycles():
  graph = import_graph()
  found = cycles(graph)
  assert not found, f'{len(found)} import cycle(s) between {PACKAGE} ' + (
    'modules:\n' + '\n'.join('  ' + describe(graph, c) for c in found)
  )


def test_cycle_detection_names_a_planted_cycle(tmp_path):
  pkg = tmp_path / 'pkg'
  (pkg / 'sub').mkdir(parents=True)
  files = {
    '__init__.py': '',
    'a.py': 'from pkg import b\n',
    'b.py': 'import os\n\n\ndef f():\n  from pkg.sub import c\n',
    'sub/__init__.py': 'from .c import thing\n',
    'sub/c.py': 'def g():\n  from .. import a\n\n\nthing = 1\n',
    'd.py': 'from pkg import a\n',  # imports the cycle, is not on it
  }
  for name, text in files.items():
    (pkg / name).write_text(text)
  graph = import_graph(str(tmp_path), 'pkg')
  assert graph['pkg.b'] == {'pkg.sub.c': 5}
  assert graph['pkg.sub'] == {'pkg.sub.c': 1}
  (cycle,) = cycles(graph)
  assert cycle == ['pkg.a', 'pkg.b', 'pkg.sub.c', 'pkg.a']
  assert describe(graph, cycle).startswith('pkg.a (line 1) -> pkg.b (line 5)')
  (pkg / 'a.py').write_text('import os\n')  # cycle broken
  assert not cycles(import_graph(str(tmp_path), 'pkg'))


# --------------------------------------------------------------- flags ---
def _is_main_block(node):
  """``if __name__ == '__main__':``"""
  test = getattr(node, 'test', None)
  return (
    isinstance(node, ast.If)
    and isinstance(test, ast.Compare)
    and isinstance(test.left, ast.Name)
    and test.left.id == '__name__'
    and any(
      isinstance(c, ast.Constant) and c.value == '__main__'
      for c in test.comparators
    )
  )


def _call_name(call):
  func = call.func
  if isinstance(func, ast.Attribute):
    return func.attr
  return func.id if isinstance(func, ast.Name) else ''


def _defines(node):
  """Lines of ``*.DEFINE_*(...)`` calls anywhere inside ``node``."""
  return [
    n.lineno
    for n in ast.walk(node)
    if isinstance(n, ast.Call) and _call_name(n).startswith('DEFINE')
  ]


def import_time_defines(path):
  """Lines where importing the file defines absl flags: DEFINE_* calls
  run at import (module level, class bodies, if/try/with blocks; not
  functions, not ``__main__`` blocks), directly or through a module-level
  function of the file called at import."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  definers = {
    node.name
    for node in tree.body
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    and _defines(node)
  }
  lines = []

  def walk(statements):
    for node in statements:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      if _is_main_block(node):
        walk(node.orelse)
        continue
      if isinstance(node, ast.ClassDef):
        walk(node.body)
        continue
      blocks = [
        getattr(node, field)
        for field in ('body', 'orelse', 'finalbody', 'handlers')
        if isinstance(getattr(node, field, None), list)
      ]
      if blocks:
        for block in blocks:
          walk(block)
        heads = [
          getattr(node, f)
          for f in ('test', 'iter', 'items')
          if hasattr(node, f)
        ]
        for head in heads:
          for part in head if isinstance(head, list) else [head]:
            lines.extend(_defines(part))
        continue
      lines.extend(_defines(node))
      lines.extend(
        n.lineno
        for n in ast.walk(node)
        if isinstance(n, ast.Call) and _call_name(n) in definers
      )

  walk(tree.body)
  return sorted(lines)


def test_only_command_line_modules_define_flags_at_import():
  modules = module_files()
  assert CLI_MODULES <= set(modules), CLI_MODULES - set(modules)
  offenders = {
    m: lines
    for m, path in modules.items()
    if m not in CLI_MODULES and (lines := import_time_defines(path))
  }
  assert not offenders, (
    'library modules define absl flags when imported (move them under '
    f"``if __name__ == '__main__':`` or into a CLI module): {offenders}"
  )
  # The check sees flags where they are: main's at import, the other
  # commands' only under __main__.
  assert import_time_defines(modules[f'{PACKAGE}.main'])
  for name in CLI_MODULES - {f'{PACKAGE}.main'}:
    assert not import_time_defines(modules[name]), name


@pytest.mark.parametrize(
  'text,expected',
  [
    ('from absl import flags\nflags.DEFINE_string("x", "", "")\n', [2]),
    ('import absl\nif True:\n  absl.flags.DEFINE_bool("x", 0, "")\n', [3]),
    ('def f():\n  flags.DEFINE_bool("x", 0, "")\n', []),
    ('def f():\n  flags.DEFINE_bool("x", 0, "")\n\n\nf()\n', [5]),
    ("if __name__ == '__main__':\n  flags.DEFINE_bool('x', 0, '')\n", []),
    ('class C:\n  F = flags.DEFINE_integer("x", 0, "")\n', [2]),
  ],
)
def test_import_time_define_detection(tmp_path, text, expected):
  path = tmp_path / 'm.py'
  path.write_text(text)
  assert import_time_defines(str(path)) == expected


# docs/structure.md: a module imports only from its layer or the layers
# below. Sub-packages count as their top-level name (``models.agcn`` ->
# ``models``).
LAYERS = {
  0: (
    'activitynet augment bases checkpoint cli datasets diagnostics graph '
    'hugepages losses metrics models optim plotting postprocess preprocess '
    'protocols tensorboard'
  ),
  1: 'config_defaults config_validation run_record',
  2: 'input_pipeline loop train_utils weights',
  3: 'export finetune knn pretrain probe',
  4: '__main__ bench build_data demo evaluate main study torch_peer',
}
LAYER_OF = {name: n for n, names in LAYERS.items() for name in names.split()}


def _layer_name(module):
  return module.split('.')[1] if '.' in module else module


def test_every_module_has_a_layer():
  names = {_layer_name(m) for m in module_files() if m != PACKAGE}
  assert names == set(LAYER_OF), (
    f'not in LAYERS: {sorted(names - set(LAYER_OF))}; '
    f'gone: {sorted(set(LAYER_OF) - names)}'
  )


def test_only_bench_imports_the_torch_peer():
  """torch is an optional extra: the PyTorch peer is bench's alone (and
  bench imports it only under --vs_torch, inside a function)."""
  importers = {
    m
    for m, imported in import_graph().items()
    if f'{PACKAGE}.torch_peer' in imported
  }
  assert importers == {f'{PACKAGE}.bench'}, importers
  with open(module_files()[f'{PACKAGE}.bench']) as f:
    tree = ast.parse(f.read())
  top_level = [
    n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
  ]
  assert not any(
    'torch' in (getattr(n, 'module', '') or '')
    or any('torch' in a.name for a in n.names)
    for n in top_level
  )


def test_no_import_points_up_the_layers():
  up = []
  for module, imported in import_graph().items():
    src = LAYER_OF.get(_layer_name(module))
    for target, line in imported.items():
      dst = LAYER_OF.get(_layer_name(target))
      if src is not None and dst is not None and dst > src:
        up.append(
          f'{module} (layer {src}, line {line}) imports {target} (layer {dst})'
        )
  assert not up, '\n'.join(up)
