# Mailroom — `make help` lists the targets.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.DEFAULT_GOAL := help
.PHONY: help install run test lint format

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## Install uv (if missing) and every workspace package into .venv
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
	@$(UV) sync --all-packages --all-groups --locked --quiet

run: install ## Start the whole platform locally (NATS, Postgres, SES emulator, five services)
	@$(UV) run --no-sync python -m mailroom_devstack run

test: install ## Run every test (unit, service, end-to-end, crash)
	@$(UV) run --no-sync pytest

lint: install ## ruff, mypy and the architecture's import boundaries
	@$(UV) run --no-sync ruff check .
	@$(UV) run --no-sync ruff format --check .
	@$(UV) run --no-sync mypy libs/contracts/src libs/kit/src services/*/src tools/*/src
	@$(UV) run --no-sync python tools/boundaries.py .

format: install ## Apply ruff's fixes and formatting
	@$(UV) run --no-sync ruff check --fix .
	@$(UV) run --no-sync ruff format .
