r"""Plants known bugs one at a time and reports which ones the tests miss.

  .venv/bin/python scripts/mutation_check.py               # every mutation
  .venv/bin/python scripts/mutation_check.py -k momentum -k tempo
  .venv/bin/python scripts/mutation_check.py --list
  .venv/bin/python scripts/mutation_check.py --stale   # STALE entries only

The working tree (tracked and untracked, non-ignored files, uncommitted edits
included) is copied to a temporary directory; the live tree is never edited.
A baseline run of the selected tests on the unmutated copy comes first (a
test that already fails would "kill" every mutation). Then each mutation
replaces one exact snippet of one file in the copy, runs the tests named with
it (``pytest -x``: stops at the first failure) and restores the file:

  killed    a named test failed: the bug is caught;
  SURVIVED  every named test passed: the tests miss this bug;
  STALE     the original snippet is not in the file (exactly once): the code
            moved, update the entry;
  ERROR     pytest could not run the tests (collection error, timeout, ...).

Exit status 0 only when every selected mutation is killed. Not part of
``make test``: the whole list takes about 10 minutes on a 2-core CPU.
Add an entry for every bug a test is written against (issue 15).
"""

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  path: str  # file, relative to the repository root
  original: str  # exact snippet, present once in the file
  mutated: str
  tests: tuple  # pytest node ids that must catch it
  note: str = ''


M = Mutation
MUTATIONS = [
  # The four planted bugs of issue 15.
  M(
    'nonfinite_guard_never_restores',
    'skel_jax/train_utils.py',
    'kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, '
    'old_state)',
    'kept = dict(new_state)',
    ('tests/test_resume.py::test_nonfinite_loss_skip_policy',),
    'the skip policy keeps the updated (NaN) state',
  ),
  M(
    'momentum_hard_coded',
    'skel_jax/pretrain.py',
    "state['params'], pcfg.momentum\n",
    "state['params'], 0.3\n",
    ('tests/test_pretrain_step.py::test_momentum_update_of_key_encoder',),
  ),
  M(
    'ufusion_concat_reversed',
    'skel_jax/models/heads.py',
    'self.cu01(jnp.concatenate([x0, upsample_nearest(x1, t0)], -1), train)',
    'self.cu01(jnp.concatenate([upsample_nearest(x1, t0), x0], -1), train)',
    ('tests/test_models.py::test_ufusion_head_matches_numpy',),
  ),
  M(
    'tempo_coin_always_slow',
    'skel_jax/augment.py',
    '  fast = jax.vmap(lambda k:',
    '  fast = False & jax.vmap(lambda k:',
    ('tests/test_augment.py::test_relative_tempo_coin_is_fair_and_per_video',),
  ),
  M(
    'key_encoder_bn_aliased',
    'skel_jax/pretrain.py',
    "state['key_batch_stats'],\n    copy=True,\n",
    "state['key_batch_stats'],\n",
    ('tests/test_resume.py::test_nonfinite_loss_skip_policy',),
    'found by the strengthened skip test: skipped steps kept key BN updates',
  ),
  # Found by reading.
  M(
    'mining_gate_dropped',
    'skel_jax/pretrain.py',
    '    return extra & mining\n',
    '    return extra\n',
    (
      'tests/test_pretrain_losses.py::'
      'test_global_loss_mines_only_when_switched_on',
    ),
    'mined positives before the mining epoch',
  ),
  M(
    'in_batch_own_video_kept',
    'skel_jax/losses.py',
    '  return jnp.where(own, -jnp.inf, neg)\n',
    '  return neg\n',
    (
      'tests/test_pretrain_losses.py::'
      'test_global_loss_mines_only_when_switched_on',
    ),
  ),
  M(
    'rvtclr_views_swapped',
    'skel_jax/bases/rvtclr.py',
    "views['q'], views['k'], keys, ratio\n",
    "views['k'], views['q'], keys, ratio\n",
    ('tests/test_pretrain_losses.py::test_make_views_wiring_per_sample',),
  ),
  M(
    'part_relation_softmax_axis',
    'skel_jax/models/heads.py',
    'self.theta(mean), self.phi(mean)), axis=-1\n',
    'self.theta(mean), self.phi(mean)), axis=1\n',
    ('tests/test_models.py::test_part_relation_branch_matches_numpy',),
  ),
  M(
    'part_relation_residual',
    'skel_jax/models/heads.py',
    'self.out_bn(self.out(y), use_running_average=not train) + x\n',
    'self.out_bn(self.out(y), use_running_average=not train) + parts\n',
    ('tests/test_models.py::test_part_relation_branch_matches_numpy',),
  ),
  # Input pipeline.
  M(
    'crop_labels_at_zero',
    'skel_jax/input_pipeline.py',
    'labels[start : start + pad_length]',
    'labels[:pad_length]',
    ('tests/test_input_pipeline.py',),
    'skeleton and labels cropped at different starts',
  ),
  M(
    'label_padding_zero',
    'skel_jax/input_pipeline.py',
    'out_labels = np.full((pad_length,), ignore_label, np.int32)',
    'out_labels = np.zeros((pad_length,), np.int32)',
    (
      'tests/test_input_pipeline.py::'
      'test_pad_sequence_pads_short_sequences_with_ignored_labels',
    ),
  ),
  M(
    'eval_fill_marked_valid',
    'skel_jax/input_pipeline.py',
    'valid = np.array([True] * len(idx) + [False] * (global_batch - len(idx)))',
    'valid = np.ones(global_batch, bool)',
    (
      'tests/test_input_pipeline.py::'
      'test_eval_batches_marks_fill_copies_invalid',
    ),
  ),
  M(
    'loop_pad_repeats_edge',
    'skel_jax/input_pipeline.py',
    'idx = np.arange(length) % t',
    'idx = np.minimum(np.arange(length), t - 1)',
    ('tests/test_input_pipeline.py::test_loop_pad_repeats_frames_cyclically',),
  ),
  M(
    'labeled_subset_truncates',
    'skel_jax/input_pipeline.py',
    'n_keep = max(1, int(round(fraction * num_examples)))',
    'n_keep = max(1, int(fraction * num_examples))',
    ('tests/test_input_pipeline.py::test_labeled_subset',),
  ),
  M(
    'fit_persons_keeps_last',
    'skel_jax/input_pipeline.py',
    '    return x[:num_persons]\n',
    '    return x[-num_persons:]\n',
    (
      'tests/test_input_pipeline.py::'
      'test_fit_persons_pads_with_zeros_and_truncates',
    ),
  ),
  M(
    'train_window_ignored',
    'skel_jax/input_pipeline.py',
    'items.append(pad_sequence(ex, self.data_cfg, window, rng))',
    'items.append(pad_sequence(ex, self.data_cfg, self.data_cfg.pad_length))',
    (
      'tests/test_input_pipeline.py::'
      'test_finetune_dataset_train_window_crops_in_step',
    ),
  ),
  # Finetune glue.
  M(
    'frame_ce_unmasked',
    'skel_jax/finetune.py',
    '  return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1)\n',
    '  return jnp.mean(ce)\n',
    (
      'tests/test_finetune_glue.py::'
      'test_frame_cross_entropy_averages_labelled_frames_only',
    ),
  ),
  M(
    'decode_config_drops_smooth_kernel',
    'skel_jax/finetune.py',
    "    smooth_kernel=int(get('smooth_kernel')),\n",
    '',
    (
      'tests/test_finetune_glue.py::'
      'test_decode_config_carries_every_eval_setting',
      'tests/test_finetune_glue.py::'
      'test_evaluation_uses_the_configured_jhang_settings',
    ),
  ),
  M(
    'confusion_transposed',
    'skel_jax/finetune.py',
    "np.add.at(confusion, (p['labels'], np.argmax(p['probs'], -1)), 1)",
    "np.add.at(confusion, (np.argmax(p['probs'], -1), p['labels']), 1)",
    ('tests/test_finetune_glue.py::test_background_only_probabilities',),
  ),
  M(
    'linear_trains_fusion',
    'skel_jax/protocols.py',
    "'linear': ('head', 'classifier'),",
    "'linear': ('head',),",
    ('tests/test_finetune_protocols.py',),
  ),
  M(
    'linear_fusion_bn_in_train_mode',
    'skel_jax/finetune.py',
    "train and protocol == 'linear_fusion',",
    'train,',
    (
      'tests/test_finetune_protocols.py::'
      'test_probe_step_trains_only_its_subtree',
    ),
    'the linear probe updates the frozen fusion BN statistics',
  ),
  M(
    'finetune_steps_per_epoch_floor',
    'skel_jax/optim.py',
    'else -(-num_sequences // b)',
    'else num_sequences // b',
    (
      'tests/test_finetune_glue.py::'
      'test_epoch_schedule_rounds_as_the_release_loaders',
    ),
  ),
  M(
    'knn_features_train_mode',
    'skel_jax/knn.py',
    'taps = model.taps_of(x, train=False)',
    'taps = model.taps_of(x, train=True)',
    (
      'tests/test_finetune_glue.py::'
      'test_knn_frame_features_resize_concatenate_normalise',
    ),
  ),
  # Schedules.
  M(
    'warmup_off_by_one',
    'skel_jax/optim.py',
    'warm = base_lr * (step + 1) / warmup_steps',
    'warm = base_lr * step / warmup_steps',
    ('tests/test_finetune_glue.py::test_warmup_step_schedule_hand_values',),
  ),
  M(
    'pretrain_steps_per_epoch_ceil',
    'skel_jax/optim.py',
    'num_sequences // b if drop_last',
    '-(-num_sequences // b) if drop_last',
    (
      'tests/test_finetune_glue.py::'
      'test_epoch_schedule_rounds_as_the_release_loaders',
    ),
  ),
  M(
    'time_conv_weight_grad_ignores_stride',
    'skel_jax/models/layers.py',
    'rhs_dilation=(stride,),',
    'rhs_dilation=(1,),',
    ('tests/test_models.py::test_time_conv_and_its_gradients_match_numpy',),
    'the hand-written kernel gradient of strided temporal convs',
  ),
  M(
    'strided_input_grad_unflipped_taps',
    'skel_jax/models/layers.py',
    'jnp.flip(taps, 0).transpose(0, 1, 3, 2),',
    'taps.transpose(0, 1, 3, 2),',
    ('tests/test_models.py::test_time_conv_and_its_gradients_match_numpy',),
    'the phase-by-phase input gradient of strided temporal convs',
  ),
  M(
    'batch_norm_grad_drops_mean_term',
    'skel_jax/models/layers.py',
    'g - d_bias / n - centred',
    'g - centred',
    (
      'tests/test_models.py::'
      'test_batch_statistics_normalization_gradients_match_differences',
    ),
    'the hand-written BN backward; the forward pass is unchanged',
  ),
  M(
    'batch_norm_grad_ignores_statistics_cotangents',
    'skel_jax/models/layers.py',
    'dx = dx + (g_mean + 2.0 * g_var * centred) / n',
    'dx = dx + g_mean / n',
    (
      'tests/test_models.py::'
      'test_batch_statistics_normalization_gradients_match_differences',
    ),
    "the variance output's own gradient (no model path differentiates it)",
  ),
  M(
    'joint_affinity_bias_averaged',
    'skel_jax/models/agcn.py',
    'e + bias[None, :, None, None]',
    'e + bias.mean()',
    (
      'tests/test_models.py::test_joint_affinity_and_its_gradients_match_numpy',
    ),
    'the joints-last embedding of the attention',
  ),
  M(
    'standard_normal_shifted_cut',
    'skel_jax/models/layers.py',
    'np.asarray(flat)[:size]',
    'np.asarray(flat)[1 : size + 1]',
    (
      'tests/test_models.py::test_initializers_draw_what_the_direct_draws_give',
    ),
    'the bucketed eager normal draw of the initializers',
  ),
  M(
    'weight_init_rounds_in_another_order',
    'skel_jax/models/layers.py',
    'np.float32(np.sqrt(2)) * np.float32(_WEIGHT_STD) * e',
    'np.float32(_WEIGHT_STD) * (np.float32(np.sqrt(2)) * e)',
    (
      'tests/test_models.py::test_initializers_draw_what_the_direct_draws_give',
    ),
    'the bucketed weight initializer (bit for bit as nnx.initializers)',
  ),
  M(
    'gif_palette_without_colour_swatch',
    'skel_jax/plotting.py',
    'frames[:: max(len(frames) // 8, 1)] + [swatch]',
    'frames[:: max(len(frames) // 8, 1)]',
    (
      'tests/test_plotting_extras.py::'
      'test_gif_keeps_a_colour_seen_in_few_frames',
    ),
    'the one-palette GIF writer',
  ),
  M(
    'time_conv_matmul_reversed_taps',
    'skel_jax/models/layers.py',
    '    for j in range(size)\n',
    '    for j in reversed(range(size))\n',
    ('tests/test_models.py::test_time_conv_and_its_gradients_match_numpy',),
    'the im2col matmul of temporal convs without a joints axis',
  ),
  M(
    'dense_input_grad_off_by_a_thousandth',
    'skel_jax/models/layers.py',
    'dx = jnp.dot(g, kernel.T)',
    'dx = jnp.dot(g, kernel.T) * (1 + 1e-3)',
    ('tests/test_models.py::test_dense_and_its_gradients_match_numpy',),
    'the hand-written backward pass of dense layers',
  ),
  M(
    'hugepages_reexec_ignores_the_marker',
    'skel_jax/hugepages.py',
    '  if environ.get(REEXECUTED):\n',
    '  if False:\n',
    ('tests/test_hugepages.py::test_wanted',),
    'a run re-executes at most once',
  ),
  M(
    'bench_settle_calls_skipped',
    'skel_jax/bench.py',
    '      for _ in range(settle):\n',
    '      for _ in range(0):\n',
    ('tests/test_bench.py::test_alternating_timer_order_and_settle_calls',),
    'the untimed step opening each side-by-side block',
  ),
  M(
    'graph_aggregation_einsum_transposes_adjacency',
    'skel_jax/models/agcn.py',
    "return jnp.einsum('ntvc,nkvw->ntwkc', x, adj)",
    "return jnp.einsum('ntvc,nkwv->ntwkc', x, adj)",
    (
      'tests/test_models.py::'
      'test_adaptive_graph_conv_matches_reference_unit_gcn',
    ),
    'the einsum path of the graph aggregation (<= 8 input channels)',
  ),
  M(
    'graph_aggregation_matmul_transposes_adjacency',
    'skel_jax/models/agcn.py',
    'adj.transpose(0, 3, 1, 2)',
    'adj.transpose(0, 2, 1, 3)',
    (
      'tests/test_models.py::'
      'test_adaptive_graph_conv_matches_reference_unit_gcn',
    ),
    'the batched-matmul path of the graph aggregation (16 channels)',
  ),
  M(
    'relative_checkpoint_path',
    'skel_jax/checkpoint.py',
    'epath.Path(os.path.abspath(directory)) / str(step)',
    'epath.Path(directory) / str(step)',
    ('tests/test_run_safety.py::test_a_relative_workdir_restores',),
    'make study (--workdir=runs/study) could not read its pretraining runs',
  ),
]


def copy_tree(dest):
  """Tracked + untracked non-ignored files of the working tree -> dest."""
  out = subprocess.run(
    ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
    cwd=ROOT,
    check=True,
    capture_output=True,
  ).stdout
  for rel in sorted(set(out.decode().split('\0')) - {''}):
    src = os.path.join(ROOT, rel)
    if not os.path.isfile(src) or os.path.islink(src):
      continue  # deleted in the working tree, or a submodule/link
    os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
    shutil.copy2(src, os.path.join(dest, rel))
  # The copy shares the user's compilation cache (train_utils), keyed by the
  # compiled program: a mutation that changes the program misses it, nothing
  # stale is reused.


def run_pytest(copy, tests, python, timeout, env):
  cmd = [python, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', *tests]
  t0 = time.time()
  try:
    proc = subprocess.run(
      cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
    )
  except subprocess.TimeoutExpired:
    return None, f'timeout after {timeout}s', time.time() - t0
  lines = [l for l in proc.stdout.strip().splitlines() if l.strip()]
  return (
    proc.returncode,
    lines[-1] if lines else proc.stderr[-300:],
    (time.time() - t0),
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '-k',
    action='append',
    default=[],
    help='only mutations whose name contains this (repeatable)',
  )
  parser.add_argument(
    '--list', action='store_true', help='list the mutations and exit'
  )
  parser.add_argument(
    '--stale',
    action='store_true',
    help='only report STALE entries (of the live tree; runs no tests)',
  )
  parser.add_argument(
    '--no-baseline',
    action='store_true',
    help='skip the unmutated run of the selected tests',
  )
  parser.add_argument(
    '--timeout', type=int, default=900, help='seconds per pytest run'
  )
  parser.add_argument(
    '--python',
    default=sys.executable,
    help='interpreter with the project installed',
  )
  parser.add_argument(
    '--keep', action='store_true', help='keep the temporary copy'
  )
  args = parser.parse_args()

  selected = [
    m for m in MUTATIONS if not args.k or any(k in m.name for k in args.k)
  ]
  if args.list:
    for m in selected:
      print(f'{m.name:36s} {m.path:28s} {" ".join(m.tests)}')
    return 0
  if not selected:
    print('no mutation matches', args.k)
    return 2
  if args.stale:
    stale = 0
    for m in selected:
      with open(os.path.join(ROOT, m.path)) as f:
        count = f.read().count(m.original)
      if count != 1:
        stale += 1
        print(f'STALE    {m.name:36s} original snippet found {count} times')
    print(f'{stale} of {len(selected)} entries stale')
    return 1 if stale else 0

  copy = tempfile.mkdtemp(prefix='mutation_check_')
  try:
    copy_tree(copy)
    env = dict(
      os.environ,
      PYTHONPATH=copy + os.pathsep + os.environ.get('PYTHONPATH', ''),
      PYTHONDONTWRITEBYTECODE='1',
    )
    where = subprocess.run(
      [args.python, '-c', 'import skel_jax; print(skel_jax.__file__)'],
      cwd=copy,
      env=env,
      check=True,
      capture_output=True,
      text=True,
    ).stdout.strip()
    if not where.startswith(copy):
      print(f'skel_jax imports from {where}, not from the copy {copy}')
      return 2
    print(f'copy of {ROOT} in {copy}', flush=True)

    if not args.no_baseline:
      tests = sorted({t for m in selected for t in m.tests})
      rc, last, secs = run_pytest(
        copy, tests, args.python, 4 * args.timeout, env
      )
      print(
        f'baseline ({len(tests)} test ids): {last} [{secs:.0f}s]', flush=True
      )
      if rc != 0:
        print('the unmutated tests fail: fix them first (or --no-baseline)')
        return 2

    results = []
    for m in selected:
      path = os.path.join(copy, m.path)
      with open(path) as f:
        text = f.read()
      count = text.count(m.original)
      if count != 1:
        results.append(
          (m, 'STALE', f'original snippet found {count} times', 0.0)
        )
      else:
        with open(path, 'w') as f:
          f.write(text.replace(m.original, m.mutated))
        try:
          rc, last, secs = run_pytest(
            copy, m.tests, args.python, args.timeout, env
          )
        finally:
          with open(path, 'w') as f:
            f.write(text)
        status = {0: 'SURVIVED', 1: 'killed'}.get(rc, 'ERROR')
        results.append((m, status, last, secs))
      m_, status, last, secs = results[-1]
      print(f'{status:8s} {m.name:36s} {last} [{secs:.0f}s]', flush=True)

    print('\nsummary:')
    for status in ('killed', 'SURVIVED', 'STALE', 'ERROR'):
      names = [m.name for m, s, _, _ in results if s == status]
      if names:
        print(f'  {status:8s} {len(names):2d}: {", ".join(names)}')
    return 0 if all(s == 'killed' for _, s, _, _ in results) else 1
  finally:
    if args.keep:
      print('kept', copy)
    else:
      shutil.rmtree(copy, ignore_errors=True)


if __name__ == '__main__':
  sys.exit(main())
