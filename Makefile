# Two commands on a fresh machine: `make demo` and `make test`.
# Python 3.12 is preferred (jax 0.12); any Python >= 3.11 works (jax 0.10.2 on 3.11).
PYTHON ?= $(shell scripts/find_python.sh)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo study test lint format bench clean clean-cache

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m skel_jax.main --config=configs/demo.py --workdir=runs/demo

# Methods x 3 pretraining seeds x 3 localization seeds with 95% intervals
# (about an hour on a 2-core CPU; re-running resumes).
study: $(STAMP)
	$(PY) -m skel_jax.study --config=configs/study.py --workdir=runs/study

# Tests run on every core (pytest-xdist); files that share expensive module
# fixtures stay on one worker (xdist_group marks).
test: $(STAMP) lint
	$(PY) -m pytest -q -n auto --dist loadgroup --durations=25 tests

# Linter and formatter (configured in pyproject.toml); `make format` fixes.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) -m skel_jax.bench --quick --out=runs/bench/quick.json $(BENCH_ARGS)

clean:
	rm -rf runs .cache .pytest_cache

# The persistent XLA cache every clone shares (skel_jax.train_utils:
# $SKEL_JAX_CACHE_DIR, else ~/.cache/skel_jax/xla); it grows until emptied.
clean-cache: $(STAMP)
	rm -rf "$$($(PY) -c 'from skel_jax import train_utils; print(train_utils.compilation_cache_dir())')"
