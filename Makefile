# `make test` is the one command that installs everything the test suite needs into ./.venv (Python packages,
# the pinned Codex CLI from npm) and runs the whole suite. CI runs exactly this (see .ci/run).
# Needs python3 with venv, npm and openssl (Debian/Ubuntu: apt-get install make python3-venv npm openssl).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CODEX := tests/e2e/node_modules/.bin/codex

.PHONY: test install lint bench-smoke user-install-check clean

# pytest's own exit code fails the target, including 5 (no tests collected).
test: install
	$(PY) -m pytest

# Reinstalls only when what it installs from has changed (the stamp files' dates say when it last did).
install: $(VENV)/.installed $(CODEX)

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(CODEX): tests/e2e/package.json tests/e2e/package-lock.json
	npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error
	touch $@

# ruff and mypy as configured in pyproject.toml; CI runs the same (.ci/run). Non-zero on any finding.
lint: install
	$(VENV)/bin/ruff check deepseek_proxy tests bench .ci
	$(VENV)/bin/mypy

bench-smoke: install
	$(PY) -m bench.run --smoke

# Builds the sdist and wheel and proves each serves when installed alone (see .ci/user_install_check.py).
user-install-check: install
	$(PY) .ci/user_install_check.py --python $(PYTHON)

clean:
	rm -rf $(VENV) tests/e2e/node_modules build dist *.egg-info
