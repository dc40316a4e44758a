"""The training loop shared by every stage.

Per step it only feeds the next (prefetched) batch to the jitted step: host
syncs happen at logging and checkpoint points (metrics of the *previous* log
point, the two-scalar non-finite record). SIGTERM and SIGINT (Ctrl-C) trigger
a final checkpoint and exit 143 / 130; a resumed run first drops the metric
records past its restored step, so ``metrics.jsonl`` never repeats a step.
"""

import sys

from tqdm import tqdm

from skel_jax import input_pipeline
from skel_jax import train_utils


def run(
  *,
  step_fn,
  state,
  ds,
  data_sharding,
  ckpt,
  log,
  start,
  total_steps,
  log_every,
  loss_terms,
  nonfinite_policy,
  desc,
  log_extra=None,
):
  """Runs steps [start, total_steps); returns the final state."""
  log.truncate(start)  # records of steps the restored state has not seen
  batches = input_pipeline.iterate(ds, start)
  try:
    with (
      train_utils.PreemptionGuard() as guard,
      tqdm(
        total=total_steps,
        initial=start,
        desc=desc,
        dynamic_ncols=True,
        mininterval=2.0,
      ) as bar,
    ):
      for step in range(start, total_steps):
        batch = input_pipeline.host_to_global(next(batches), data_sharding)
        state, metrics = step_fn(state, batch)
        done = step + 1
        last = done == total_steps
        logged = done % log_every == 0 or last
        if logged:
          log.push(done, metrics, **(log_extra(done) if log_extra else {}))
          if log.last:
            bar.set_postfix(loss=f'{log.last["loss"]:.4g}')
        if logged or last or guard.requested or ckpt.should_save(done):
          # Never checkpoint (or go on) past a non-finite loss under 'stop'.
          train_utils.check_nonfinite(state, loss_terms, nonfinite_policy, ckpt)
        if guard.requested:
          ckpt.save(done, state, force=True)
          ckpt.close()
          log.close()
          print(
            f'[{desc}] {guard.signal_name}: saved step {done} to '
            f'{ckpt.directory}; rerun the same command to resume',
            file=sys.stderr,
            flush=True,
          )
          raise SystemExit(guard.exit_code)
        ckpt.save(done, state, force=last)
        bar.update(1)
  finally:
    log.close()
    ckpt.close()
  return state
