# The two commands of the README: `make synth` (the main job) and `make test` (the whole suite).
# Each installs what it needs first, from Pipfile.lock and package-lock.json, nothing by hand.
# `make test` also needs Terraform >= 1.5 on PATH (the stacks are handed to it).
SHELL := /bin/bash
.DEFAULT_GOAL := synth

PIPENV_VERSION := 2026.10.3
CONFIG ?= examples/config.toml
OUT ?= cdktf.out

export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_NOSPIN := 1
export PIPENV_YES := 1
export PIPENV_IGNORE_VIRTUALENVS := 1
# jsii prints an end-of-life banner on Node 20 at every start; it is noise, not news.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export WRANGLER_SEND_METRICS := false

VENV := .venv
PY := $(VENV)/bin/python

.PHONY: synth test install lint format schema serve-handler doctor bench clean tools

$(VENV)/.synced: Pipfile.lock
	@echo "==> installing Python dependencies from Pipfile.lock into $(VENV)/"
	@# A Python marked "externally managed" (Debian's own) refuses a plain pip install: pipenv
	@# then goes to the user's site-packages, which is all this bootstrap needs.
	@python3 -m pipenv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet --disable-pip-version-check pipenv==$(PIPENV_VERSION) 2>/dev/null \
		|| python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages pipenv==$(PIPENV_VERSION)
	python3 -m pipenv sync --dev
	@touch $@

node_modules/.installed: package-lock.json
	@echo "==> installing the cdktf CLI and the local Workers runtime (wrangler) from package-lock.json"
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

install: $(VENV)/.synced node_modules/.installed

synth: $(VENV)/.synced
	@echo "==> synthesizing $(CONFIG) into $(OUT)/"
	$(PY) main.py --config $(CONFIG) --out $(OUT)

lint: $(VENV)/.synced
	@echo "==> ruff (lint and format) and mypy"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(VENV)/.synced
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# config.schema.json from the configuration models (a test fails while it is stale).
schema: $(VENV)/.synced
	$(PY) -m config --write-schema

# System tools the tests call (Debian packages): installed only when missing.
tools:
	@command -v shellcheck >/dev/null || { \
	  echo "==> installing shellcheck (Debian package)"; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq shellcheck; }
	@command -v nft >/dev/null || [ -x /usr/sbin/nft ] || { \
	  echo "==> installing nftables and iproute2 (Debian packages, for the firewall tests)"; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq nftables iproute2; }

test: install lint tools
	@echo "==> pytest"
	$(VENV)/bin/pytest

serve-handler: $(VENV)/.synced
	$(PY) -m handler.local_server --config $(CONFIG)

# Read-only checks of a deployed installation (README, Troubleshooting), with the deploy's
# credentials from the environment and the stacks' state read where `cdktf deploy` ran.
doctor: $(VENV)/.synced
	$(PY) -m doctor --config $(CONFIG) --out $(OUT)

bench: install
	$(PY) bench/handler_core.py
	$(PY) bench/worker_runtime.py
	$(PY) bench/synth_scaling.py
	$(PY) bench/config_load.py
	$(PY) bench/burst.py

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
