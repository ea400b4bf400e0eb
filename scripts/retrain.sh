#!/usr/bin/env bash
# Retrain for engineers: a candidate from a CSV or a topic time range, threshold
# calibrated on held-out normal windows, a false-alarm gate, registered, promoted
# (and announced to running scorers) when it passes. Exit 1 when the gate fails.
#   scripts/retrain.sh --csv normal.csv
#   scripts/retrain.sh --from 2025-11-01T00:00:00Z --to 2025-11-08T00:00:00Z --channels a,b,c
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
exec .venv/bin/stream-ae retrain "$@"
