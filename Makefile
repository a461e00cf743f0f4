# Every target installs what it needs: a fresh machine needs only `make demo` or `make test`.
SHELL := /bin/bash
# uv from PATH, else the copy `make uv` installs with pip (run as a module: works for --user
# and system installs alike).
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=

.PHONY: help uv sync test test-stack test-fast chaos lint fmt bench demo dev clean

help:
	@echo "make demo   run the main job end to end on the embedded devstack"
	@echo "make test   run the test suite (CI runs it, then make test-stack and make chaos)"
	@echo "make test-stack  the team deployment (PostgreSQL, daemon, webserver) with real processes"
	@echo "make chaos  fault-injection suite on the devstack; table in bench/results/chaos.md"
	@echo "make dev    devstack + Dagster UI on http://127.0.0.1:3000"
	@echo "make lint   ruff check, ruff format --check, mypy, shellcheck, hadolint, workflow schemas"
	@echo "make bench  benchmarks against their peers; results in bench/results/"

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

sync: uv
	@$(UV) sync --all-extras --quiet

# The chaos cases that boot pods run in `make chaos` (its fast cases run here too).
test: sync
	$(UV) run pytest -m "not chaos and not stack" $(PYTEST_ARGS)

# The team deployment proven with real processes (12 queued runs, daemon killed mid-queue).
test-stack: sync
	$(UV) run pytest -m stack $(PYTEST_ARGS)

test-fast: sync
	$(UV) run pytest -m "not slow and not e2e and not chaos and not stack" $(PYTEST_ARGS)

# Every chaos case (fast and slow); writes bench/results/chaos.md and chaos.json, then fails if
# a case missed its acceptance (0 orphan / duplicate pods, R2 videos materialized, one-line errors).
chaos: sync
	$(UV) run pytest tests/chaos --chaos-report=bench/results/chaos $(PYTEST_ARGS)

lint: sync
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run bash scripts/lint-extra.sh

fmt: sync
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

bench: uv
	@$(UV) sync --all-extras --group bench --quiet
	$(UV) run --group bench python -m bench

demo: sync
	$(UV) run python -m rp_pipeline.tools.demo

dev: sync
	$(UV) run python -m rp_devstack.dev

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache
