"""The one place that talks to Orbax (so a move to ``ocp.v1`` stays local)."""
import os

import jax
import orbax.checkpoint as ocp


def abstract_like(tree, sharding):
  """ShapeDtypeStructs carrying the target sharding (restore onto any mesh).

  ``sharding``: one sharding for every leaf, or a pytree of shardings with the
  structure of ``tree`` (e.g. ``train_utils.state_shardings``).
  """
  if isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        tree)
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, sharding)


def check_same_shapes(name, target, source):
  """Raises naming every parameter whose shape differs (or that is missing)."""
  t = {jax.tree_util.keystr(p): tuple(x.shape)
       for p, x in jax.tree_util.tree_leaves_with_path(target)}
  s = {jax.tree_util.keystr(p): tuple(x.shape)
       for p, x in jax.tree_util.tree_leaves_with_path(source)}
  bad = [f'{k}: model {t.get(k)} vs checkpoint {s.get(k)}'
         for k in sorted(set(t) | set(s)) if t.get(k) != s.get(k)]
  if bad:
    raise ValueError(f'{name}: checkpoint does not fit the model '
                     f'({len(bad)} mismatches): ' + '; '.join(bad[:8]))


class Checkpointer:
  """Async CheckpointManager with a save interval and a keep-N policy."""

  def __init__(self, directory, *, save_interval_steps=1000, max_to_keep=3):
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_interval_steps, max_to_keep=max_to_keep,
        create=True, enable_async_checkpointing=True)
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self):
    if self.manager is None:  # closed: read what is on disk
      steps = [int(d) for d in os.listdir(self.directory) if d.isdigit()]
      return max(steps) if steps else None
    return self.manager.latest_step()

  def should_save(self, step):
    return self.manager.should_save(step)

  def save(self, step, state, force=False):
    """Saves if the interval policy says so (or ``force``); returns True if saved."""
    return self.manager.save(step, args=ocp.args.StandardSave(state),
                             force=force)

  def restore(self, abstract_state, step=None):
    step = self.latest_step() if step is None else step
    return self.manager.restore(step,
                                args=ocp.args.StandardRestore(abstract_state))

  def close(self):
    """Waits for pending async saves; safe to call more than once."""
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()
      self.manager = None


def open_and_restore(workdir, ckpt_cfg, state, sharding, desc):
  """Checkpointer of ``workdir`` and the state to start from (step, state).

  Restores the latest checkpoint onto ``sharding`` (one sharding or a pytree of
  them matching ``state``; the current mesh, whatever device count or mesh
  shape wrote it); a fresh run starts at step 0 from ``state``.
  """
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'),
                      save_interval_steps=ckpt_cfg.save_interval_steps,
                      max_to_keep=ckpt_cfg.max_to_keep)
  start = ckpt.latest_step() or 0
  if start:
    state = ckpt.restore(abstract_like(state, sharding))
    print(f'[{desc}] resumed from step {start}', flush=True)
  return ckpt, start, state
