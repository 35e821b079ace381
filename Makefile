# The two commands a newcomer needs:  `make up`  (whole system, simulated data)  and  `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: up down test lint unit integration e2e bench fmt clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start Kafka, Redis, worker, API + dashboard, JT/T 808 gateway and a simulator.
up: $(STAMP)
	$(BIN)/skipwatch up

## Stop the local Kafka and Redis started by `make up`.
down: $(STAMP)
	$(BIN)/skipwatch infra down

## Lint, types, architecture contract, then every test (unit, integration on real Kafka + Redis, e2e).
test: lint
	$(BIN)/pytest -p no:cacheprovider --timeout=600 --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -m unit

integration: $(STAMP)
	$(BIN)/pytest -m integration

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .skipwatch .pytest_cache .mypy_cache .ruff_cache
