"""Test set-up: 8 simulated CPU devices so every sharded code path runs in CI.

XLA's CPU backend runs at optimisation level 0 in tests: most of the suite is
bound by compiling small programs, and level 0 compiles them in about half
the time (the suite passes at either level: same tolerances).
Measured on this 2-core machine, whole suite, cold cache: 13 min 05 s at
level 0 vs 18 min 13 s at the default; the few training-heavy tests run up to
20% slower. ``SKEL_JAX_TEST_FULL_OPT=1`` runs the default optimisation.
Subprocesses that tests start inherit these flags through the environment.
"""

import os

os.environ.setdefault('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=8'
if (
  not os.environ.get('SKEL_JAX_TEST_FULL_OPT')
  and '--xla_backend_optimization_level' not in os.environ['XLA_FLAGS']
):
  os.environ['XLA_FLAGS'] += ' --xla_backend_optimization_level=0'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
# Share compiled programs across test runs (and CI re-runs).
_CACHE = os.path.join(os.path.dirname(__file__), '..', '.cache', 'jax')
jax.config.update('jax_compilation_cache_dir', os.path.abspath(_CACHE))
# Every program, down to the small random-number ones of eager model init
# (at optimisation level 0 most compile in under skel_jax.main's 50 ms), so
# the second worker and later runs read them back: a warm model init takes
# 1.9 s instead of 4.3 s.
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
