"""skel_jax.hugepages: when a command-line run re-executes itself."""

import os
import subprocess
import sys

import pytest

from skel_jax import hugepages


@pytest.mark.parametrize(
  'environ,glibc,mode,want',
  [
    ({}, (2, 36), 'madvise', True),
    ({}, (2, 35), 'madvise', True),
    ({}, (2, 34), 'madvise', False),  # glibc without the tunable
    ({}, None, 'madvise', False),  # not glibc (musl)
    ({}, (2, 36), 'always', False),  # the kernel already gives them
    ({}, (2, 36), 'never', False),
    ({}, (2, 36), None, False),  # no THP file
    ({'SKEL_JAX_HUGEPAGES': '0'}, (2, 36), 'madvise', False),
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, (2, 36), 'madvise', False),
    ({'GLIBC_TUNABLES': 'glibc.malloc.check=0'}, (2, 36), 'madvise', True),
    ({'SKEL_JAX_HUGEPAGES_REEXECUTED': '1'}, (2, 36), 'madvise', False),
  ],
)
def test_wanted(environ, glibc, mode, want):
  assert hugepages.wanted(environ, glibc, mode) is want


def test_with_tunable_keeps_the_users_tunables():
  env = hugepages.with_tunable({'GLIBC_TUNABLES': 'glibc.malloc.check=0'})
  assert env['GLIBC_TUNABLES'] == 'glibc.malloc.check=0:glibc.malloc.hugetlb=1'
  assert env['SKEL_JAX_HUGEPAGES_REEXECUTED'] == '1'
  assert (
    hugepages.with_tunable({})['GLIBC_TUNABLES'] == 'glibc.malloc.hugetlb=1'
  )


def _run_module(env):
  """`python -m skel_jax` in a clean child: its GLIBC_TUNABLES."""
  out = subprocess.run(
    [sys.executable, '-m', 'skel_jax'],
    env=env,
    capture_output=True,
    text=True,
    check=True,
    timeout=60,
  ).stdout
  (line,) = [x for x in out.splitlines() if x.startswith('GLIBC_TUNABLES=')]
  return line.split('=', 1)[1]


def test_a_command_line_run_reexecutes_once_with_the_tunable():
  drop = ('GLIBC_TUNABLES', 'SKEL_JAX_HUGEPAGES', hugepages.REEXECUTED)
  env = {k: v for k, v in os.environ.items() if k not in drop}
  mode = hugepages.thp_mode()
  glibc = hugepages.glibc_version()
  expect = 'glibc.malloc.hugetlb=1' if hugepages.wanted({}, glibc, mode) else ''
  assert _run_module(env) == expect
  assert _run_module(dict(env, SKEL_JAX_HUGEPAGES='0')) == ''
