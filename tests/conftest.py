"""Test set-up: 8 simulated CPU devices so every sharded code path runs in CI.

``SKEL_JAX_TEST_FAST_COMPILE=1`` runs XLA's CPU backend at optimisation level
0: compile-bound files take about half the time (tests/test_fsdp.py +
test_finetune_protocols.py: 156 s vs 299 s), but training-heavy ones run
slower, and the whole suite was slower that way, so it is not the default.
"""

import os

os.environ.setdefault('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=8'
if (
  os.environ.get('SKEL_JAX_TEST_FAST_COMPILE')
  and '--xla_backend_optimization_level' not in os.environ['XLA_FLAGS']
):
  os.environ['XLA_FLAGS'] += ' --xla_backend_optimization_level=0'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
# Share compiled programs across test runs (and CI re-runs).
_CACHE = os.path.join(os.path.dirname(__file__), '..', '.cache', 'jax')
jax.config.update('jax_compilation_cache_dir', os.path.abspath(_CACHE))
# As skel_jax.main: small eager-init programs too (shared across workers
# and the subprocesses that tests start).
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.05)
