# DePU: two commands do everything. `make up` brings the whole system up locally; `make test` runs the tests.
# Both install what they need first (a Python venv and the node tools), and only when their inputs changed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: up chat test lint bench deps clean

deps: $(STAMP) $(NODE_STAMP)

$(STAMP): requirements-dev.txt layers/depu/requirements.txt agent/requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

$(NODE_STAMP): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

up: deps  ## the whole system on this machine: moto, anvil, the API on :3000, workers, an agent, the bot stand-in
	$(PY) -m local up

chat: deps  ## talk to the bot from this terminal (needs `make up` running)
	$(PY) -m local chat

test: deps  ## every test, against moto, anvil and torch on CPU
	$(PY) -m pytest -n 2 --dist loadgroup
	$(VENV)/bin/cfn-lint template.yaml

lint: deps
	$(VENV)/bin/cfn-lint template.yaml

bench: deps  ## every benchmark, one table
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .local
