# The two commands a newcomer needs:  `make up`  (whole system, simulated data)  and  `make test`.
#
# Every install comes from uv.lock (runtime and dev tools, one lock): `uv sync --locked` refuses to
# run when pyproject.toml changed without the lock being refreshed (`make lock`).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
UV_VERSION := 0.13.8
# uv itself: the one on PATH, else a pinned copy from PyPI in .uv/ (needs only python3 with venv).
UV      ?= $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install sysdeps up down test lint unit integration e2e faults lock upgrade fmt clean

.uv/bin/uv:
	$(PY) -m venv .uv
	.uv/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(UV) lock --check >/dev/null 2>&1 || { \
	  echo "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock" >&2; exit 1; }
	$(UV) sync --locked --python $(PY)
	touch $(STAMP)

## Create .venv exactly as locked (runtime + dev group).
install: $(STAMP)

## Debian packages (redis-server, chromium, fonts) when missing, and the Kafka broker jars.
sysdeps:
	deploy/sysdeps.sh
	deploy/kafka/kafka.sh fetch

## Refresh uv.lock after editing pyproject.toml (keeps every other pin where it is).
lock: | $(UV)
	$(UV) lock

## Upgrade one dependency:  make upgrade PKG=fastapi   (then `make test` and commit uv.lock)
upgrade: | $(UV)
	$(UV) lock --upgrade-package $(PKG)

## Start Kafka, Redis, worker, API + dashboard, JT/T 808 gateway and a simulator.
up: sysdeps $(STAMP)
	$(BIN)/skipwatch up

## Stop the local Kafka and Redis started by `make up`.
down: $(STAMP)
	$(BIN)/skipwatch infra down

## Lint, types, architecture contract, then every test (unit, integration on real Kafka + Redis, e2e).
test: sysdeps lint
	$(BIN)/pytest -p no:cacheprovider --timeout=600 --durations=15 -m "not faults"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -m unit

integration: sysdeps $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -m "integration and not faults"

e2e: sysdeps $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -m e2e

## The fault-and-load suite (long; not part of `make test`): see docs/reliability.md.
faults: sysdeps $(STAMP)
	$(BIN)/pytest -p no:cacheprovider --timeout=1800 -s -m faults

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .uv .skipwatch .pytest_cache .mypy_cache .ruff_cache
