#!/usr/bin/env bash
# Retrain for engineers: a candidate from a CSV or a topic time range, threshold
# calibrated on held-out normal windows, a false-alarm gate, registered, promoted
# (and announced to running scorers) when it passes. Exit 1 when the gate fails.
# A topic range leaves out what `trainer run` leaves out (emitted anomaly events,
# maintenance and acknowledged faults from the feedback topic, the champion's
# alarms; refused above trainer.max_excluded_share); a CSV only its labelled rows.
#   scripts/retrain.sh --csv normal.csv
#   scripts/retrain.sh --from 2025-11-01T00:00:00Z --to 2025-11-08T00:00:00Z --channels a,b,c
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
exec .venv/bin/stream-ae retrain "$@"
