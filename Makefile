# The two commands for a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.run-installed
DEV_STAMP := $(VENV)/.dev-installed
PYTEST_ARGS ?=

.PHONY: run test lint format codegen bench install clean

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e .
	touch $@

$(DEV_STAMP): $(RUN_STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(DEV_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/shopstream run

test: $(DEV_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m protos.codegen --check

format: $(DEV_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

codegen: $(DEV_STAMP)
	$(PY) -m protos.codegen
	$(VENV)/bin/shopstream topics asyncapi > docs/asyncapi.json

bench: $(DEV_STAMP)
	$(PY) -m bench.all

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
