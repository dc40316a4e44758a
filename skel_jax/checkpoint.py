"""The one place that talks to Orbax (so a move to ``ocp.v1`` stays local).

Restoring never gives up on a workdir because its newest checkpoint is
unreadable (e.g. data files cut short by a full disk): it warns naming the
step and falls back to the next older one. Shapes are compared with the
checkpoint's metadata first, so a checkpoint of another architecture is one
clear error instead of an Orbax/tensorstore dump. Nothing is ever deleted.
"""

import os
import sys

import jax
import orbax.checkpoint as ocp
from etils import epath


class CheckpointMismatchError(ValueError):
  """A readable checkpoint whose arrays do not fit the model being built."""


class NoReadableCheckpointError(RuntimeError):
  """Checkpoints exist but none of them can be restored."""


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
    meta = ocp.StandardCheckpointHandler().metadata(
      epath.Path(self.directory) / str(step) / 'default'
    )
    source = _shapes(getattr(meta, 'tree', meta))
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
        nxt = (
          f'trying step {steps[i + 1]}'
          if i + 1 < len(steps)
          else 'no older checkpoint left'
        )
        warn(
          f'[{desc}] warning: checkpoint step {step} in {self.directory} '
          f'is unreadable ({_short(e)}); {nxt}'
        )
        continue
      return step, state, unreadable
    raise NoReadableCheckpointError(
      f'no readable checkpoint in {self.directory}: steps {steps} all fail '
      f'to restore (newest: {_short(errors[0])}). Nothing was deleted; '
      'move that folder aside to start the run over.'
    )

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
