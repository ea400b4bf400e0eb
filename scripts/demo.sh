#!/usr/bin/env bash
# The demo command: set-up, then `stream-ae demo` (starts the local broker if none
# runs, trains, streams simulated faults, prints events, stops the broker it started).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/stream-ae demo "$@"
