#!/usr/bin/env bash
# Prints the interpreter for the venv: Python 3.12 if this machine has one
# (on PATH or installed by pyenv), else python3 (must be >= 3.11).
ok() { "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' >/dev/null 2>&1; }
if ok python3.12; then command -v python3.12; exit 0; fi
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V -r); do
    p="$(pyenv root)/versions/$v/bin/python3.12"
    if ok "$p"; then echo "$p"; exit 0; fi
  done
fi
if ok python3; then command -v python3; exit 0; fi
echo "error: need Python 3.11-3.13 (found: $(python3 --version 2>&1))" >&2
exit 1
