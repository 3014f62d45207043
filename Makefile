# Emanet — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
PYTEST_WORKERS ?= 2
STAMP := $(VENV)/.installed

.PHONY: help install run migrate demo worker test test-postgres test-sqlite lint format bench plans clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create the virtualenv and install Emanet with its dev tools

run: $(STAMP) ## Migrate, load demo data and serve on http://$(HOST):$(PORT) (SQLite, in-process worker)
	mkdir -p var
	$(BIN)/emanet migrate
	$(BIN)/emanet demo
	EMANET_PUBLIC_URL=$${EMANET_PUBLIC_URL:-http://$(HOST):$(PORT)} EMANET_RUN_WORKER_IN_PROCESS=true EMANET_MIN_HOLD_HOURS=$${EMANET_MIN_HOLD_HOURS:-0} EMANET_LOG_JSON=false $(BIN)/emanet serve --host $(HOST) --port $(PORT)

migrate: $(STAMP) ## Apply database migrations
	$(BIN)/emanet migrate

worker: $(STAMP) ## Run a background worker
	$(BIN)/emanet worker

test: $(STAMP) ## Run the whole test suite (PostgreSQL + Redis, then the core on SQLite)
	$(MAKE) test-postgres
	$(MAKE) test-sqlite

test-postgres: $(STAMP) ## Run every test against PostgreSQL and Redis on 127.0.0.1
	$(BIN)/pytest -n $(PYTEST_WORKERS) -p no:cacheprovider

test-sqlite: $(STAMP) ## Run every test that is not PostgreSQL's own on SQLite (the embedded default, `make run`)
	EMANET_TEST_DB=sqlite $(BIN)/pytest -n $(PYTEST_WORKERS) -p no:cacheprovider -m "not postgres_only"

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check emanet tests
	$(BIN)/ruff format --check emanet tests
	$(BIN)/mypy emanet

format: $(STAMP) ## Format the code
	$(BIN)/ruff check --fix emanet tests
	$(BIN)/ruff format emanet tests

bench: $(STAMP) ## Benchmarks against pgbench; writes docs/benchmarks.md (QUICK=1 for a short run)
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev,bench]'
	QUICK=$(QUICK) $(BIN)/python -m bench.run

plans: $(STAMP) ## Every SQL statement the tests send, planned on 1,000,000 escrows; writes docs/plans.md (QUICK=1: 100,000)
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev,bench]'
	QUICK=$(QUICK) $(BIN)/python -m bench.plans

clean: ## Remove the virtualenv and local data
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
