#!/usr/bin/env bash
# One call for a lent GPU machine (issue 16): CUDA tests, the 512x512x200 inference benchmark and a 2-minute
# GPU training, all recorded in one JSON (default gpu_check.json, or $OUT/gpu_check.json when $OUT is set, as
# on the device machine). Without CUDA it writes {"cuda": false, ...} and exits 0.
# Usage: scripts/gpu_check.sh [extra args of scripts/gpu_check.py]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_check.py --json "${OUT:-.}/gpu_check.json" "$@"
