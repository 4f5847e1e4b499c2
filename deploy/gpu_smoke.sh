#!/usr/bin/env bash
# GPU smoke test for a deployment machine (no internet, no checkpoint needed): SAM2 hiera_l with
# random weights on CUDA; times encode, a cached click, batched candidate Dice for 64 points and
# one shift-block training step; prints a table.  Runs in well under 5 minutes.
#
#   deploy/gpu_smoke.sh                                   # cuda, hiera_l
#   deploy/gpu_smoke.sh --device cpu --config tiny --repeats 1   # quick local check
# Uses .venv (VENV=...) when present, else the python on PATH (e.g. inside the Docker image).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv}
PY=python3
[ -x "$VENV/bin/python" ] && PY="$VENV/bin/python"
exec timeout "${SMOKE_TIMEOUT:-290}" "$PY" -m benchmarks.gpu_smoke "$@"
