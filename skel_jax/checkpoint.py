"""The one place that talks to Orbax (so a move to ``ocp.v1`` stays local).

Restoring never gives up on a workdir because its newest checkpoint is
unreadable (e.g. data files cut short by a full disk): it warns naming the
step and falls back to the next older one. Shapes are compared with the
checkpoint's metadata first, so a checkpoint of another architecture is one
clear error instead of an Orbax/tensorstore dump. Nothing is ever deleted.

``restore_subtree`` reads a few arrays of a run (e.g. its backbone weights)
without building any training state: only the leaves under a path of the
saved tree are read, the rest of the checkpoint is never touched.
"""

import os
import sys

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from etils import epath

# Replica-parallel saves (each replica of a replicated array writes one slice
# of it) compile a slicing program per device and array shape on the first
# save: 232 of them (~7 s on a 2-core CPU) for the smoke model on 8 devices,
# for arrays whose writes take microseconds. Only slices of at least 1 MiB
# are worth it; smaller arrays are written from one replica. (Orbax already
# turns replica-parallel off on GPU.)
MIN_REPLICA_PARALLEL_SLICE_BYTES = 1 << 20


def _register_array_handler():
  # Replacing Orbax's default handler logs a warning on every import.
  level = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
      jax.Array,
      ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_SLICE_BYTES
      ),
      override=True,
    )
  finally:
    absl_logging.set_verbosity(level)


_register_array_handler()


class CheckpointMismatchError(ValueError):
  """A readable checkpoint whose arrays do not fit the model being built."""


class NoReadableCheckpointError(RuntimeError):
  """Checkpoints exist but none of them can be restored."""


class MissingSubtreeError(CheckpointMismatchError, LookupError):
  """A checkpoint without the subtree asked for (the message lists what it
  holds at that level)."""


def abstract_like(tree, sharding):
  """ShapeDtypeStructs carrying the target sharding (restore onto any mesh).

  ``sharding``: one sharding for every leaf, or a pytree of shardings with the
  structure of ``tree`` (e.g. ``train_utils.state_shardings``).
  """
  if isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
    )
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    tree,
    sharding,
  )


def check_same_shapes(name, target, source):
  """Raises naming every parameter whose shape differs (or that is missing)."""
  t = {
    jax.tree_util.keystr(p): tuple(x.shape)
    for p, x in jax.tree_util.tree_leaves_with_path(target)
  }
  s = {
    jax.tree_util.keystr(p): tuple(x.shape)
    for p, x in jax.tree_util.tree_leaves_with_path(source)
  }
  bad = [
    f'{k}: model {t.get(k)} vs checkpoint {s.get(k)}'
    for k in sorted(set(t) | set(s))
    if t.get(k) != s.get(k)
  ]
  if bad:
    raise ValueError(
      f'{name}: checkpoint does not fit the model '
      f'({len(bad)} mismatches): ' + '; '.join(bad[:8])
    )


def _path_name(path):
  """'params.backbone.units.0.kernel' for a pytree path (dict keys, list
  indices, attributes alike), so Orbax metadata and model trees compare."""
  out = []
  for entry in path:
    for attr in ('key', 'idx', 'name'):
      if hasattr(entry, attr):
        out.append(str(getattr(entry, attr)))
        break
    else:
      out.append(str(entry))
  return '.'.join(out)


def _shapes(tree):
  return {
    _path_name(p): tuple(x.shape)
    for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }


def _short(error):
  text = f'{type(error).__name__}: {error}'.splitlines()[0]
  return text if len(text) <= 200 else text[:197] + '...'


def warn(message):
  print(message, file=sys.stderr, flush=True)


def _warn_unreadable(desc, directory, steps, i, error):
  """The warning for ``steps[i]`` (newest first) failing to restore."""
  nxt = (
    f'trying step {steps[i + 1]}'
    if i + 1 < len(steps)
    else 'no older checkpoint left'
  )
  warn(
    f'[{desc}] warning: checkpoint step {steps[i]} in {directory} '
    f'is unreadable ({_short(error)}); {nxt}'
  )


def _none_readable(directory, steps, errors):
  return NoReadableCheckpointError(
    f'no readable checkpoint in {directory}: steps {steps} all fail '
    f'to restore (newest: {_short(errors[0])}). Nothing was deleted; '
    'move that folder aside to start the run over.'
  )


class Checkpointer:
  """Async CheckpointManager with a save interval and a keep-N policy.

  ``read_only``: for reading another run's workdir (finetuning, export): no
  saves, no deletions, no directory creation.
  """

  def __init__(
    self, directory, *, save_interval_steps=1000, max_to_keep=3, read_only=False
  ):
    if read_only:
      options = ocp.CheckpointManagerOptions(
        read_only=True,
        save_interval_steps=0,
        max_to_keep=None,
        create=False,
        enable_async_checkpointing=False,
      )
    else:
      options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_interval_steps,
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=True,
      )
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self):
    return list(self.manager.all_steps())

  def shape_mismatches(self, step, abstract_state):
    """'key: model (..) vs checkpoint (..)' for every array that differs or
    is missing on one side; raises if the step's metadata is unreadable."""
    source = _shapes(_metadata_tree(self.directory, step))
    target = _shapes(abstract_state)
    show = lambda shape: 'absent' if shape is None else shape
    return [
      f'{k}: model {show(target.get(k))} vs checkpoint {show(source.get(k))}'
      for k in sorted(set(target) | set(source))
      if target.get(k) != source.get(k)
    ]

  def restore_readable(self, abstract_state, desc):
    """(step, state, unreadable steps) of the newest checkpoint that restores.

    Each unreadable step is a warning naming it and the error; a checkpoint
    of another architecture raises ``CheckpointMismatchError``; no readable
    checkpoint at all raises ``NoReadableCheckpointError``.
    """
    steps = sorted(self.all_steps(), reverse=True)
    unreadable, errors = [], []
    for i, step in enumerate(steps):
      try:
        bad = self.shape_mismatches(step, abstract_state)
        if bad:
          raise CheckpointMismatchError(
            f'{self.directory} step {step} does not fit the model '
            f'({len(bad)} mismatches: the config that wrote it differs): '
            + '; '.join(bad[:8])
          )
        state = self.restore(abstract_state, step)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        unreadable.append(step)
        errors.append(e)
        _warn_unreadable(desc, self.directory, steps, i, e)
        continue
      return step, state, unreadable
    raise _none_readable(self.directory, steps, errors)

  def latest_step(self):
    if self.manager is None:  # closed: read what is on disk
      steps = [int(d) for d in os.listdir(self.directory) if d.isdigit()]
      return max(steps) if steps else None
    return self.manager.latest_step()

  def should_save(self, step):
    return self.manager.should_save(step)

  def save(self, step, state, force=False):
    """Saves if the interval policy says so (or ``force``); returns True if saved."""
    return self.manager.save(
      step, args=ocp.args.StandardSave(state), force=force
    )

  def restore(self, abstract_state, step=None):
    step = self.latest_step() if step is None else step
    return self.manager.restore(
      step, args=ocp.args.StandardRestore(abstract_state)
    )

  def close(self):
    """Waits for pending async saves; safe to call more than once."""
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()
      self.manager = None


def set_aside(workdir, ckpt, steps, desc):
  """Moves unreadable step folders to WORKDIR/checkpoints_unreadable/ (kept
  for the user to inspect), so new saves at those steps can be written."""
  if jax.process_index() == 0:
    dest_root = epath.Path(workdir) / 'checkpoints_unreadable'
    dest_root.mkdir(parents=True, exist_ok=True)
    for step in steps:
      dest = dest_root / str(step)
      n = 1
      while dest.exists():
        dest, n = dest_root / f'{step}.{n}', n + 1
      (epath.Path(ckpt.directory) / str(step)).rename(dest)
      warn(f'[{desc}] unreadable step {step} kept as {dest}')
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices('checkpoint_set_aside')
  ckpt.manager.reload()


def open_and_restore(workdir, ckpt_cfg, state, sharding, desc):
  """Checkpointer of ``workdir`` and the state to start from (step, state).

  Restores the newest readable checkpoint onto ``sharding`` (one sharding or
  a pytree of them matching ``state``; the current mesh, whatever device
  count or mesh shape wrote it); a fresh run starts at step 0 from ``state``.
  Unreadable newer steps are warned about and set aside, never deleted.
  """
  ckpt = Checkpointer(
    os.path.join(workdir, 'checkpoints'),
    save_interval_steps=ckpt_cfg.save_interval_steps,
    max_to_keep=ckpt_cfg.max_to_keep,
  )
  start = 0
  if ckpt.all_steps():
    try:
      start, state, unreadable = ckpt.restore_readable(
        abstract_like(state, sharding), desc
      )
    except Exception:
      ckpt.close()
      raise
    if unreadable:
      set_aside(workdir, ckpt, unreadable, desc)
    print(f'[{desc}] resumed from step {start}', flush=True)
  return ckpt, start, state


# ---------------------------------------------------------------------------
# Parts of a run's checkpoint, without building its training state.
# ---------------------------------------------------------------------------
def _step_path(directory, step):
  # Orbax refuses relative paths ("Checkpoint path should be absolute"), and
  # a workdir given on the command line (``--workdir=runs/x``) is relative.
  return epath.Path(os.path.abspath(directory)) / str(step) / 'default'


def _metadata_tree(directory, step):
  """The saved tree of ``step`` with Orbax metadata leaves (shape, dtype)."""
  meta = ocp.StandardCheckpointHandler().metadata(_step_path(directory, step))
  return getattr(meta, 'tree', meta)


def _parts(prefix):
  """'params/backbone' (or a sequence of keys) -> ('params', 'backbone')."""
  if isinstance(prefix, str):
    return tuple(p for p in prefix.split('/') if p)
  return tuple(str(p) for p in prefix)


def _children(node):
  """{key: child} of a saved dict or list; None for a leaf or an empty
  (None) subtree."""
  if isinstance(node, dict):
    return {str(k): v for k, v in node.items()}
  if isinstance(node, (list, tuple)):
    return {str(i): v for i, v in enumerate(node)}
  return None


def _lookup(tree, parts):
  """(node, None) at ``parts``; (None, depth) when ``parts[depth]`` is not
  there, depth == len(parts) when the node is an empty (None) subtree."""
  node = tree
  for depth, part in enumerate(parts):
    children = _children(node)
    if children is None or part not in children:
      return None, depth
    node = children[part]
  if node is None:
    return None, len(parts)
  return node, None


def _held(tree, parts):
  """What the saved tree holds at ``parts``, in words."""
  node = tree
  for part in parts:
    node = _children(node)[part]
  where = '/'.join(parts)
  children = _children(node)
  if children:
    return f'{where or "the checkpoint"} holds: ' + ', '.join(
      '/'.join(parts + (k,)) for k in sorted(children)
    )
  return f'{where} is empty' if node is None else f'{where} is one array'


def _missing(workdir, directory, step, tree, parts, depth):
  head = (
    f'{workdir}: checkpoint step {step} ({directory}) has no '
    f'{"/".join(parts)!r}'
  )
  if depth == len(parts):
    return MissingSubtreeError(f'{head}: it is empty')
  return MissingSubtreeError(f'{head}; {_held(tree, parts[:depth])}')


def _key_name(entry):
  for attr in ('key', 'idx', 'name'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _restore_parts(directory, step, tree, wanted):
  """The saved tree of ``step`` with the leaves under the paths ``wanted``
  read onto the first local device and every other leaf ``...`` (never
  read)."""
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def target(path, meta):
    keys = tuple(_key_name(e) for e in path)
    if not any(keys[: len(w)] == w for w in wanted):
      return ocp.PLACEHOLDER
    if hasattr(meta, 'shape') and hasattr(meta, 'dtype'):
      return jax.ShapeDtypeStruct(meta.shape, meta.dtype, sharding=sharding)
    return meta

  def restore_args(leaf):
    if isinstance(leaf, jax.ShapeDtypeStruct):
      return ocp.ArrayRestoreArgs(
        sharding=sharding, global_shape=leaf.shape, dtype=leaf.dtype
      )
    return ocp.PLACEHOLDER if leaf is ocp.PLACEHOLDER else ocp.RestoreArgs()

  item = jax.tree_util.tree_map_with_path(target, tree)
  handler = ocp.PyTreeCheckpointHandler()
  try:
    return handler.restore(
      _step_path(directory, step),
      args=ocp.args.PyTreeRestore(
        item=item, restore_args=jax.tree.map(restore_args, item)
      ),
    )
  finally:
    handler.close()


def _pure(tree):
  """NNX variables as saved (``{'value': array}``) become their arrays and
  list indices (saved as '0', '1', ...) integers: the nested dicts that
  ``nnx.to_pure_dict`` gives and ``nnx.replace_by_pure_dict`` takes."""
  if isinstance(tree, dict):
    if set(tree) == {'value'} and not isinstance(
      tree['value'], (dict, list, tuple)
    ):
      return tree['value']
    return {
      int(k) if isinstance(k, str) and k.isdigit() else k: _pure(v)
      for k, v in tree.items()
    }
  if isinstance(tree, (list, tuple)):
    return type(tree)(_pure(v) for v in tree)
  return tree


def saved_steps(workdir):
  """The steps saved in WORKDIR/checkpoints, oldest first (read-only)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoint under {directory}')
  ckpt = Checkpointer(directory, read_only=True)
  try:
    return sorted(ckpt.all_steps())
  finally:
    ckpt.close()


def stored_keys(workdir, prefix='', step=None):
  """'params/backbone', 'params/global_head', ...: the paths directly under
  ``prefix`` ('' = the top) in ``step`` (default: the newest)."""
  directory = os.path.join(workdir, 'checkpoints')
  step = max(saved_steps(workdir)) if step is None else step
  tree = _metadata_tree(directory, step)
  parts = _parts(prefix)
  node, depth = _lookup(tree, parts)
  if depth == len(parts):  # an empty (None) subtree
    return []
  if depth is not None:
    raise _missing(workdir, directory, step, tree, parts, depth)
  return ['/'.join(parts + (k,)) for k in sorted(_children(node) or {})]


def restore_subtrees(workdir, prefixes, step=None, optional=(), desc=None):
  """(step, [nested dict per prefix]) of one checkpoint step of a run.

  Only the leaves under each prefix ('params/backbone', 'batch_stats', ...;
  keys of the saved tree joined by '/'; '' is all of it) are read, onto the first local
  device; nothing of the run's model or training state is built. NNX
  variables come back as their arrays and list indices as integers
  (``_pure``). ``step`` None: the newest step that reads, older ones after a
  warning naming the unreadable step (as a resume does); an explicit
  ``step`` is read or raises.

  A prefix in ``optional`` that the checkpoint does not hold (or holds as an
  empty subtree) gives None; any other missing prefix raises
  ``MissingSubtreeError`` naming the workdir and listing the paths that
  exist at that level. No readable step raises ``NoReadableCheckpointError``.
  """
  directory = os.path.join(workdir, 'checkpoints')
  desc = desc or workdir
  steps = saved_steps(workdir)
  if not steps:
    raise FileNotFoundError(f'no checkpoint under {directory}')
  if step is not None and step not in steps:
    raise FileNotFoundError(
      f'{workdir}: no checkpoint step {step} in {directory} (saved: {steps})'
    )
  candidates = [step] if step is not None else sorted(steps, reverse=True)
  optional = {_parts(p) for p in optional}
  errors = []
  for i, s in enumerate(candidates):
    try:
      tree = _metadata_tree(directory, s)
      found = []
      for prefix in prefixes:
        parts = _parts(prefix)
        _, depth = _lookup(tree, parts)
        if depth is None:
          found.append(parts)
        elif parts in optional:
          found.append(None)
        else:
          raise _missing(workdir, directory, s, tree, parts, depth)
      wanted = [p for p in found if p is not None]
      restored = _restore_parts(directory, s, tree, wanted) if wanted else {}
    except MissingSubtreeError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      if step is not None:
        raise NoReadableCheckpointError(
          f'checkpoint step {s} in {directory} is unreadable ({_short(e)}). '
          'Nothing was deleted.'
        ) from e
      errors.append(e)
      _warn_unreadable(desc, directory, candidates, i, e)
      continue
    return s, [
      None if parts is None else _pure(_lookup(restored, parts)[0])
      for parts in found
    ]
  raise _none_readable(directory, candidates, errors)


def restore_subtree(workdir, prefix, step=None, desc=None):
  """The leaves of one checkpoint step under ``prefix`` as a nested dict of
  arrays, e.g. ``restore_subtree(workdir, 'params/backbone')``: the
  backbone weights of a pretraining run without its optimizer, queues or
  model. See ``restore_subtrees`` (step choice, fallback, errors)."""
  return restore_subtrees(workdir, [prefix], step=step, desc=desc)[1][0]


def save_tree(path, tree):
  """Writes a nested dict of arrays as a standalone Orbax checkpoint."""
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.abspath(path), tree, force=True)
  ckptr.wait_until_finished()


def restore_tree(path):
  """A checkpoint written by ``save_tree`` as nested dicts (string keys)."""
  return ocp.StandardCheckpointer().restore(os.path.abspath(path))
