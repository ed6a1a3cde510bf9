# streamkpi — every job is one target. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help setup demo test test-unit test-functional test-integration lint bench up down status clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: ## Install what is missing: Java 17, redis-server, chromium, .venv with pinned deps (the local stack's too) and the KCL jars
	@scripts/setup.sh --dev --browser

demo: ## Install what the demo needs (Java 17, redis-server, .venv, the KCL jars), start the local stack, send traffic, run the worker and serve the dashboard (Ctrl-C stops all)
	@scripts/setup.sh
	@$(BIN)/streamkpi demo

test: setup ## Set up, lint, then run the whole test suite (unit, functional, integration)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@scripts/run_tests.sh $(PYTEST_ARGS)

test-unit: setup ## Pure-logic tests only (seconds)
	@$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-functional: setup ## The processor through amazon_kclpy's KCLProcess, with fakes
	@$(BIN)/pytest tests/functional $(PYTEST_ARGS)

test-integration: setup ## Real KCL daemon + moto + redis-server
	@$(BIN)/pytest tests/integration $(PYTEST_ARGS)

lint: setup ## ruff (lint + format check) and mypy
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy

bench: ## Benchmark the record processor on one core (events/s vs the protocol floor, store writes, memory; the bounds' cost before/after) and a worker end to end through the KCL daemon (events/s vs a checkpoint-only processor) into docs/benchmarks.md
	@test -x $(BIN)/python || scripts/setup.sh --python-only --dev
	@if command -v taskset >/dev/null 2>&1; then taskset -c 0 $(BIN)/python scripts/bench.py; else $(BIN)/python scripts/bench.py; fi
	@$(BIN)/python scripts/bench_replay.py
	@$(BIN)/python scripts/bench_bounds.py
	@$(BIN)/python scripts/bench_capacity.py

up: setup ## Start the local stack (moto + redis-server) and create the resources
	@$(BIN)/streamkpi local up

down: ## Stop the local stack processes started by `make up`
	@$(BIN)/streamkpi local down

status: ## Show what of the local stack runs
	@$(BIN)/streamkpi local status

clean: down ## Stop the local stack and remove local state and caches (keeps .venv)
	rm -rf .streamkpi .pytest_cache .mypy_cache .ruff_cache .hypothesis
