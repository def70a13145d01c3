# DePU: two commands do everything. `make up` brings the whole system up locally; `make test` runs the tests.
# Both install what they need first (a Python venv and the node tools), and only when their inputs changed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
export SAM_CLI_TELEMETRY := 0

.PHONY: up chat test lint build bench deps clean bwrap podman browser openapi

deps: $(STAMP) $(NODE_STAMP) bwrap podman browser

bwrap:  ## bubblewrap: the agent runs renters' scripts in namespaces of their own (Debian package bubblewrap)
	@command -v bwrap >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q bubblewrap || { apt-get update -q && apt-get install -y -q bubblewrap; }; \
	else echo "need bubblewrap for the agent's sandbox: sudo apt-get install bubblewrap"; exit 1; fi; }

podman:  ## podman and runc: job specs in a renter's own image (depu_agent.containers; crun refuses cgroup v1 hosts)
	@{ command -v podman >/dev/null && command -v runc >/dev/null; } || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q --no-install-recommends podman runc || { apt-get update -q && apt-get install -y -q --no-install-recommends podman runc; }; \
	else echo "need podman and runc for the container path: sudo apt-get install podman runc"; exit 1; fi; }

browser: $(NODE_STAMP)  ## Chromium (Debian package chromium) for the dashboard's browser test; playwright-core drives it
	@bash scripts/install_browser.sh

openapi: $(STAMP)  ## write docs/*.openapi.json from the API routes and models (tests/test_api_contracts.py checks them)
	$(PY) scripts/openapi.py
	$(PY) scripts/public_api_openapi.py

$(STAMP): requirements-dev.txt layers/depu/requirements.txt agent/requirements.txt clients/python/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet -e clients/python  # the `depu` command (README: Use DePU from code)
	$(VENV)/bin/pip uninstall --quiet --yes pynvml 2>/dev/null || true  # deprecated twin of nvidia-ml-py (warns in every job's log)
	touch $(STAMP)

$(SAM_STAMP):
	test -d $(SAM_VENV) || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli
	touch $(SAM_STAMP)

$(NODE_STAMP): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

up: deps  ## the whole system on this machine: moto, anvil, the API on :3000, workers, an agent, the bot stand-in (UP_ARGS="--fast-schedules --no-agent ...")
	$(PY) -m local up $(UP_ARGS)

chat: deps  ## talk to the bot from this terminal (needs `make up` running)
	$(PY) -m local chat

test: deps lint  ## every test, against moto, anvil and torch on CPU, after the template checks
	$(PY) -m pytest -n 2 --dist loadgroup

lint: deps $(SAM_STAMP)  ## template.yaml must pass cfn-lint and `sam validate --lint`
	$(VENV)/bin/cfn-lint template.yaml
	AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint --template template.yaml

build: deps $(SAM_STAMP)  ## sam build (no container) into .aws-sam/build for `sam deploy`, without the runtime's boto3; prints each function's size
	$(PY) scripts/build.py

bench: deps  ## every benchmark, one table
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(SAM_VENV) node_modules .local
