"""Test set-up: 8 simulated CPU devices so every sharded code path runs in CI.

Tests compile many small programs and run each a few times, so XLA's CPU
backend skips its expensive LLVM optimisations here
(``--xla_backend_optimization_level=0``: about half the compile time, a
slower run of tiny shapes). Numerics stay float32 and every tolerance holds;
set ``SKEL_JAX_TEST_FULL_OPT=1`` to run the suite with the optimised backend.
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
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
