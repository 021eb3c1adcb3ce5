# churnstream's one task runner; CI calls `make test` (see .ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup prometheus-tools kafka-fetch lint format test test-unit demo bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "churnstream needs Python 3.11+ (found %s): install it or run make PYTHON=python3.11" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The bench-only extra (quixstreams, py-spy) on top of dev; only `make bench` needs it.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

setup: $(STAMP) prometheus-tools ## create .venv, install the project and promtool (idempotent)

prometheus-tools: ## install promtool + prometheus (Debian package) if missing
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }

kafka-fetch: setup ## fetch the locked Apache Kafka jars into the user cache (once)
	$(BIN)/python -c 'from streams.io.kafka_local import fetch_jars, java_major_version; java_major_version(); print("kafka jars in", fetch_jars())'

lint: setup ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check streams tests bench deploy
	$(BIN)/ruff format --check streams tests bench deploy
	$(BIN)/mypy

format: setup ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format streams tests bench deploy
	$(BIN)/ruff check --fix streams tests bench deploy

test: setup kafka-fetch lint ## everything: lint, types, unit and real-broker tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: setup ## only the tests that need no broker
	$(BIN)/python -m pytest -m 'not kafka' $(PYTEST_ARGS)

demo: setup kafka-fetch ## local broker, topics, events flowing, live output (DEMO_SECONDS=N to stop)
	$(BIN)/churnstream demo

bench: setup kafka-fetch $(BENCH_STAMP) ## benchmarks (BENCH_ARGS=--quick ...); last line is JSON
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean: ## remove the virtualenv and local state (not the jar cache)
	rm -rf $(VENV) .churnstream .mypy_cache .ruff_cache .pytest_cache
