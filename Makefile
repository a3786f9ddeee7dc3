# Mailroom — `make help` lists the targets.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.DEFAULT_GOAL := help
.PHONY: help install run test lint format chaos bench bench-quick asyncapi

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## Install uv (if missing) and every workspace package into .venv
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
	@$(UV) sync --all-packages --all-groups --locked --quiet --compile-bytecode
	@# Our own (editable) sources too: every service process would otherwise compile its imports at
	@# start (PYTHONDONTWRITEBYTECODE is common), ~2.5 CPU-s each; up-to-date files are skipped.
	@$(UV) run --no-sync python -m compileall -q -j0 libs services tools >/dev/null

run: install ## Start the whole platform locally (NATS, Postgres, SES emulator, five services)
	@$(UV) run --no-sync python -m mailroom_devstack run

test: install ## Run every test (unit, service, end-to-end, crash)
	@$(UV) run --no-sync pytest

# Test folders have no __init__.py and repeat module names (conftest, test_repository), so mypy
# checks each folder on its own; the root conftest.py and tools/boundaries.py go with the sources.
MYPY_SOURCES := libs/contracts/src libs/kit/src $(wildcard services/*/src tools/*/src) conftest.py tools/boundaries.py tools/asyncapi.py examples/subscriber.py
MYPY_TESTS := $(wildcard libs/*/tests services/*/tests tools/*/tests) tests bench

lint: install ## ruff (lint + format), mypy (sources and tests), boundaries (imports, SQL only in repository.py)
	@status=0; \
	$(UV) run --no-sync ruff check . || status=1; \
	$(UV) run --no-sync ruff format --check . || status=1; \
	$(UV) run --no-sync mypy $(MYPY_SOURCES) || status=1; \
	for dir in $(MYPY_TESTS); do $(UV) run --no-sync mypy "$$dir" || status=1; done; \
	$(UV) run --no-sync python tools/boundaries.py . || status=1; \
	exit $$status

asyncapi: install ## Regenerate docs/asyncapi.yaml (the event stream's AsyncAPI 3 document) from libs/contracts
	@$(UV) run --no-sync python tools/asyncapi.py

format: install ## Apply ruff's fixes and formatting
	@$(UV) run --no-sync ruff check --fix .
	@$(UV) run --no-sync ruff format .

chaos: install ## Kill -9 every service in turn, restart NATS and Postgres under a steady stream; report lost/duplicates
	@$(UV) run --no-sync python tests/chaos.py --seconds $${CHAOS_SECONDS:-180} --rate $${CHAOS_RATE:-20}

# wrk comes from Debian's package; `.ci/run` does not need it (make test never benches).
WRK_CHECK = command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)); } || { echo "make bench needs wrk: sudo apt-get install wrk"; exit 1; }

bench: install ## Measure accept path and pipeline against same-run baselines (long; BENCH_ARGS=... to tune)
	@$(WRK_CHECK)
	@$(UV) run --no-sync python bench/run.py $(BENCH_ARGS)

bench-quick: install ## The short bench (about 4 minutes): run it before stopping on a change to a hot path
	@$(WRK_CHECK)
	@$(UV) run --no-sync python bench/run.py --quick $(BENCH_ARGS)
