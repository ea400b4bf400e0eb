# stream_ae — `make help` lists the targets.
.DEFAULT_GOAL := help
VENV := .venv/bin

help: ## List the targets
	@grep -E '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

setup: ## Create/refresh .venv from uv.lock (reuses the uv cache)
	scripts/setup.sh

demo: ## Run the demo end to end (set-up, broker, train, stream, events, summary)
	scripts/demo.sh

test: ## The full test command: set-up, lint, types, unit + integration tests (real broker)
	scripts/test.sh

test-unit: setup ## Unit tests only (no broker)
	$(VENV)/pytest tests/unit

test-integration: setup ## Integration tests only (starts a private broker)
	$(VENV)/pytest tests/integration

lint: setup ## ruff lint + format check
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

fmt: setup ## Format and autofix
	$(VENV)/ruff format .
	$(VENV)/ruff check --fix .

typecheck: setup ## mypy (strict) on the package
	$(VENV)/mypy

bench: setup ## Throughput benchmark (1M readings; prints ratio= last)
	$(VENV)/python benchmarks/throughput.py

kafka-up: setup ## Start the local broker
	$(VENV)/stream-ae kafka up

kafka-down: setup ## Stop the local broker
	$(VENV)/stream-ae kafka down

clean: ## Remove caches and demo output (not the venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .stream_ae

.PHONY: help setup demo test test-unit test-integration lint fmt typecheck bench kafka-up kafka-down clean
