# CellBank Network — the two commands are `make run` and `make test`; everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_SRC := $(shell find protos/cellbank -name '*.proto')
PROTO_STAMP := protos/.generated

.PHONY: test-chaos setup protos tools run test lint bench clean infra-up

setup: $(STAMP) $(PROTO_STAMP)

# `pip install -e .` (pyproject.toml): the dependencies, the code importable from any directory,
# and the operator CLI as $(VENV)/bin/cellbank ([project.scripts]).
$(STAMP): pyproject.toml requirements.txt deploy/requirements-dev.txt deploy/constraints.txt
	$(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/lib/python*/site-packages/cellbank.pth  # what older Makefiles wrote instead
	$(VENV)/bin/pip install --disable-pip-version-check -q -e . -r deploy/requirements-dev.txt -c deploy/constraints.txt
	touch $(STAMP)

protos: $(STAMP)
	$(PY) -m deploy.protos
	touch $(PROTO_STAMP)

$(PROTO_STAMP): $(STAMP) $(PROTO_SRC)
	$(PY) -m deploy.protos
	touch $(PROTO_STAMP)

# Pinned tools the project fetches itself (deploy/tools.py) into .cellbank/tools: kustomize.
tools: $(STAMP)
	$(PY) -m deploy.tools

run: setup
	$(PY) -m deploy.run

test: setup tools
	sh deploy/ensure_chromium.sh
	$(PY) -m pytest -m "not chaos"

# The slow fault tests on a private 3-broker Kafka cluster: services and brokers (one, the active
# controller, two at once) SIGKILLed, PostgreSQL stopped for 10 s, under load.
test-chaos: setup
	$(PY) -m pytest -m chaos tests/chaos

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services deploy tests protos/cellbank/storage/v1/client.py
	$(PY) -m deploy.buf lint
	$(PY) -m deploy.buf breaking
	PYTHONPATH=$(CURDIR):$(CURDIR)/protos $(VENV)/bin/lint-imports --cache-dir .cellbank/import-linter-cache

bench: setup
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) .cellbank .pytest_cache .mypy_cache .ruff_cache .hypothesis $(PROTO_STAMP) *.egg-info
	find protos -name '*_pb2*.py*' -delete
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
