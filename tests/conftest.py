"""Test set-up: 8 simulated CPU devices so every sharded code path runs in CI.

XLA's CPU backend runs at optimisation level 0 in tests: most of the suite is
bound by compiling small programs, and level 0 compiles them faster (the
suite passes at either level: same tolerances).
Measured on this 2-core machine, whole suite, cold cache: 13 min 05 s at
level 0 vs 18 min 13 s at the default; the few training-heavy tests run up to
20% slower. Re-measured 2026-12-03 (jaxlib 0.12, the smoke pretraining step
on 8 devices): compile 9.4-9.8 s at level 0 vs 11.4-12.3 s at the default, a
step 0.41-0.55 s vs 0.28 s. A warm persistent cache skips the compiles, so
there the default level might win (not measured for the whole suite); level
0 is kept for a fresh machine's first run, which pays every compile.
``SKEL_JAX_TEST_FULL_OPT=1`` runs the default optimisation.
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
import pytest  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)

from skel_jax import train_utils  # noqa: E402

# Share compiled programs across test runs, clones and CI re-runs (the user's
# cache directory; SKEL_JAX_CACHE_DIR moves it). Every program, down to the
# small random-number ones of eager model init (at optimisation level 0 most
# compile in under skel_jax.main's 50 ms), so the second worker and later
# runs read them back: a warm model init takes 1.9 s instead of 4.3 s.
train_utils.enable_compilation_cache(min_compile_secs=0.0)


def pytest_configure(config):
  """Stops a --dist loadgroup run whose xdist_group marks would be ignored.

  pytest-xdist 3.8 tags each grouped test's node id with ``@group``; under
  pytest 9 the tag does not stick, so every group was silently spread over
  the workers (its module fixtures built on each). The controller refuses
  that pair up front; a worker that still sees an untagged grouped test
  stops the run (pytest-xdist then reports only the test it stopped at).
  """
  if (
    config.getoption('dist', 'no') == 'loadgroup'
    and not hasattr(config, 'workerinput')
    and pytest.version_tuple[0] >= 9
  ):
    raise pytest.UsageError(
      'pytest >= 9 with pytest-xdist 3.8 ignores xdist_group marks: '
      'install requirements.txt (it pins pytest < 9).'
    )


def pytest_collection_finish(session):
  if not session.config.getoption('loadgroup', False):
    return  # not an xdist worker under --dist loadgroup
  for item in session.items:
    if item.get_closest_marker('xdist_group') and '@' not in item.nodeid:
      pytest.exit(f'{item.nodeid}: xdist_group ignored', returncode=4)
