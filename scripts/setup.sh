#!/usr/bin/env bash
# Create or refresh .venv from uv.lock. Reuses uv's package cache (~/.cache/uv), so
# torch (a multi-GB CUDA build on Linux) downloads once per machine, not per run.
set -euo pipefail
cd "$(dirname "$0")/.."

export UV_PYTHON_DOWNLOADS=never   # use the machine's Python 3.11, never fetch one
if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv (pip --user)" >&2
  python3 -m pip install --user --quiet "uv==0.13.8"
  export PATH="$HOME/.local/bin:$PATH"
  command -v uv >/dev/null 2>&1 || PATH="$(python3 -m site --user-base)/bin:$PATH"
fi
# --frozen: install exactly uv.lock; --link-mode hardlink keeps the cache shared.
uv sync --frozen --link-mode=hardlink --python "$(command -v python3.11 || command -v python3)" "$@"
