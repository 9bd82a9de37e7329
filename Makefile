# The two commands for a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.run-installed
DEV_STAMP := $(VENV)/.dev-installed
PYTEST_ARGS ?=

.PHONY: run test lint format codegen bench install clean kafka-jars browser

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

# Apache Kafka's jars (Maven Central, once; cached in ~/.cache/shopstream) for the tests on it.
kafka-jars: $(RUN_STAMP)
	$(PY) -c 'from agents.common.kafka import resolve_jars; print("kafka jars in", resolve_jars())'

# Debian's Chromium for the storefront's browser tests (tests/e2e/test_storefront.py), which
# Playwright drives by its path; Playwright's own browser downloads are never used.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "no /usr/bin/chromium: sudo apt-get install chromium (the browser tests skip without it)"; fi

test: $(DEV_STAMP) kafka-jars browser
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

# Issue 9's figures on Tansu and on Apache Kafka, then issue 8's (catalogue, first order after a
# pause). The other benchmarks: $(PY) -m bench.all.
bench: $(DEV_STAMP) kafka-jars
	$(PY) -m bench.issue9
	$(PY) -m bench.issue8

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
