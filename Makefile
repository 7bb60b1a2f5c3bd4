# beaconsql: thin aliases. `make help` lists them. Each target works on a fresh clone: it
# creates .venv and installs the project (with its development tools) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-all stress lint bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install beaconsql with its development tools

demo: $(STAMP) ## Run the main job end to end (embedded PostgreSQL unless a DSN is set); SERVE=1 then serves its live page
	$(BIN)/beaconsql demo $(if $(SERVE),--serve)

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check beaconsql migrations tests bench
	$(BIN)/ruff format --check beaconsql migrations tests bench
	$(BIN)/mypy

# Two workers (pytest-xdist): one per core of the machine this is tuned for.
PYTEST := $(BIN)/pytest -q -n 2

test: lint ## Lint, then the tests but the slow ones (BEACONSQL_TEST_DSN, else an embedded server of their own)
	$(PYTEST) -m "not slow"

test-all: lint ## Lint, then every test, the slow stress and load runs included
	$(PYTEST)

stress: $(STAMP) ## The runner's statements on the same jobs, 8 connections for 120 s; every abort counted
	BEACONSQL_STRESS_THREADS=8 BEACONSQL_STRESS_SECONDS=120 \
		$(BIN)/pytest -q -s -p no:xdist tests/test_concurrency.py -k stress

bench: $(STAMP) ## The benchmarks: ratios against baselines, written to bench/results.json
	$(BIN)/python -m bench

clean: ## Remove .venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
