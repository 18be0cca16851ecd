#!/usr/bin/env bash
# Benchmark 5: config change -> served latency and RSS under churn, for the manifest directory
# and the Kubernetes API (fake API server) sources. The harness is bench/changes.py (its
# docstring lists what it measures and the CHANGE_* knobs); this runs it with the repository's
# venv (PyYAML, the test helpers) and writes $RESULTS/changes.tsv.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${RESULTS:=$ROOT/bench/results/changes-$(date +%Y%m%d-%H%M%S)}"
export RESULTS BENCH_BIN="$BIN"
mkdir -p "$RESULTS/raw"
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || PY=python3
# Ctrl-C reaches the harness too (same process group); it stops what it started on the way out.
exec "$PY" "$ROOT/bench/changes.py"
