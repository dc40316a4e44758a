"""A workdir belongs to one config: the fingerprint check behind re-runs.

``WORKDIR/config.json`` is the resolved config of the run that started the
workdir, written only when it starts fresh (no checkpoint yet). A re-run is
compared with it (plus the changes recorded since) *before anything is
written*: differences in run length, logging/checkpoint intervals, device
count or data location are expected and only recorded; any other difference
stops the run naming each key with its old and new value, unless the CLI's
``--allow_config_change`` is given, which continues with the new values.
Every accepted change is one line of ``WORKDIR/config_history.jsonl``.
"""

import contextlib
import datetime
import json
import os
import sys

from skel_jax import config_validation

CONFIG_FILE = 'config.json'
HISTORY_FILE = 'config_history.jsonl'

# Keys (last dotted parts) that may change between runs of one workdir: run
# length, logging and checkpoint cadence, the devices used (fsdp only
# re-lays the same state out) and where the data lives.
ALLOWED_CHANGES = (
  'num_steps',
  'num_epochs',
  'log_every',
  'num_devices',
  'fsdp',
  'data.dir',
  'data.build_if_missing',
)
ALLOWED_SECTIONS = ('checkpoint',)  # any key under config.checkpoint

# Set by ``skel_jax.main --allow_config_change`` (a CLI decision, so library
# callers opt in explicitly through ``allow_config_change()``).
_ALLOW_CHANGE = False


class ConfigChangedError(config_validation.ConfigError):
  """A re-run whose config differs from the one that started the workdir."""


@contextlib.contextmanager
def allow_config_change(allow=True):
  """Within this block a workdir continues under a changed config."""
  global _ALLOW_CHANGE
  previous, _ALLOW_CHANGE = _ALLOW_CHANGE, bool(allow)
  try:
    yield
  finally:
    _ALLOW_CHANGE = previous


def flatten(tree, prefix=''):
  """{'a': {'b': 1}} -> {'a.b': 1} (lists stay values)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def config_dict(config):
  """The config as plain JSON values (tuples become lists, as on disk)."""
  return json.loads(config.to_json_best_effort())


def is_allowed(key):
  parts = key.split('.')
  return any(key == a or key.endswith('.' + a) for a in ALLOWED_CHANGES) or any(
    s in parts[:-1] for s in ALLOWED_SECTIONS
  )


def has_checkpoints(workdir):
  path = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(path) and any(d.isdigit() for d in os.listdir(path))


def effective_config(workdir):
  """The workdir's config as a nested dict: config.json with every change
  of config_history.jsonl applied; None without config.json."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    tree = json.load(f)
  history = os.path.join(workdir, HISTORY_FILE)
  if os.path.exists(history):
    with open(history) as f:
      for line in f:
        if not line.strip():
          continue
        for key, change in json.loads(line)['changes'].items():
          node = tree
          *parents, last = key.split('.')
          for part in parents:
            node = node.setdefault(part, {})
          node[last] = change['new']
  return tree


def recorded_config(workdir):
  tree = effective_config(workdir)
  return None if tree is None else flatten(tree)


def differences(old, new):
  """{key: (old, new)} over keys both configs have (a key only one side has
  comes from a code change that added or removed a setting, not the user)."""
  return {
    k: (old[k], new[k]) for k in sorted(set(old) & set(new)) if old[k] != new[k]
  }


def _show(value):
  return json.dumps(value)


def check(workdir, config):
  """Decides what a run may do with ``workdir``; writes nothing.

  Returns ``(fresh, changes)``: ``fresh`` when no checkpoint exists yet (the
  config is (re)recorded), else the {key: (old, new)} differences to record.
  Raises ``ConfigChangedError`` for a difference outside ``ALLOWED_CHANGES``
  unless changes are allowed.
  """
  new = flatten(config_dict(config))
  old = recorded_config(workdir)
  if old is None or not has_checkpoints(workdir):
    return True, {}
  changes = differences(old, new)
  blocking = {k: v for k, v in changes.items() if not is_allowed(k)}
  if blocking and not _ALLOW_CHANGE:
    lines = '\n'.join(
      f'  {k}: {_show(a)} (recorded) -> {_show(b)} (now)'
      for k, (a, b) in blocking.items()
    )
    raise ConfigChangedError(
      f'{workdir} holds a run started with another config '
      f'({os.path.join(workdir, CONFIG_FILE)}); {len(blocking)} key(s) '
      f'differ:\n{lines}\nUse a new --workdir, or pass '
      '--allow_config_change to continue this run with the new values '
      f'(recorded in {os.path.join(workdir, HISTORY_FILE)}).'
    )
  return False, changes


def write(workdir, config, fresh, changes):
  """Records the config of a fresh run, or appends accepted changes."""
  if fresh:
    with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    return
  if not changes:
    return
  forced = sorted(k for k in changes if not is_allowed(k))
  record = {
    'time': datetime.datetime.now().isoformat(timespec='seconds'),
    'argv': sys.argv,
    'forced': forced,
    'changes': {k: {'old': a, 'new': b} for k, (a, b) in changes.items()},
  }
  with open(os.path.join(workdir, HISTORY_FILE), 'a') as f:
    f.write(json.dumps(record) + '\n')
  if forced:
    print(
      f'[skel_jax] warning: continuing {workdir} with a changed config '
      f'({", ".join(forced)}); recorded in {HISTORY_FILE}',
      file=sys.stderr,
      flush=True,
    )
