# `make test` is the one command that installs everything the test suite needs into ./.venv (Python packages,
# the pinned Codex CLI from npm) and runs the whole suite. CI runs exactly this (see .ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test install bench-smoke clean

test: install
	$(PY) -m pytest

install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error

bench-smoke: install
	$(PY) -m bench.run --smoke

clean:
	rm -rf $(VENV) tests/e2e/node_modules build *.egg-info
