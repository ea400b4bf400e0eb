#!/usr/bin/env bash
# The test command: set-up, lint, type check, then every test. Integration tests
# start their own Apache Kafka broker (on free ports, in a temporary folder) through
# one session fixture and stop it at the end; they never skip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
