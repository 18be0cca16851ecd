#!/usr/bin/env bash
# Runs every tandem benchmark and writes bench/results/<UTC timestamp>/{results.tsv,scale.tsv,
# summary.md,machine.txt,raw/}. Loopback only; every load run is bounded (wrk -d, h2load -D).
#
#   bench/run.sh                 everything but changes and instructions (~26 min: proxy ~3.5, tiers ~3.5,
#                                scale ~1, cpu ~8, tls ~10, plus the build)
#   bench/run.sh proxy tiers     only some parts (proxy | tiers | scale | cpu | tls | changes | instructions)
#   bench/run.sh changes         change -> served latency and RSS under churn, both config sources
#                                (~10 min; knobs CHANGE_*: see bench/changes.py)
#   bench/run.sh instructions    instructions per request under callgrind (~10 min)
#
# Knobs (environment): RUNS=3 DURATION=10 WRK_THREADS=2 WRK_CONNS=64 H2_CONNS=32 H2_STREAMS=4
# SCALE_SIZES="10 1000 5000" BENCH_PORT_BASE=39000 BENCH_NO_BUILD=1 (use existing binaries);
# instructions part: INSTR_REQUESTS=2000 INSTR_CONNS=8 (bench/instructions.sh);
# cpu part: CPU_WRK_THREADS=1 CPU_WRK_CONNS=32 CPU_MAX_FOREIGN=0.4 CPU_CONFIGS="..." CPU_RATE=8000
#   CPU_RATE_CONNS=16 (bench/cpu.sh; CPU_RATE=0 skips the fixed-rate part);
# tls part: TLS_SERVERS TLS_LOADS TLS_AWS_BIN TLS_CALLGRIND=1 TLS_CG_SECONDS (bench/tls.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
export RUNS="${RUNS:-3}" DURATION="${DURATION:-10}" WRK_THREADS="${WRK_THREADS:-2}"
export WRK_CONNS="${WRK_CONNS:-64}" H2_CONNS="${H2_CONNS:-32}" H2_STREAMS="${H2_STREAMS:-4}"
export BENCH_PORT_BASE="${BENCH_PORT_BASE:-39000}"
parts=("$@"); ((${#parts[@]})) || parts=(proxy tiers scale cpu tls)

bench_install_tools
bench_build
export BENCH_NO_BUILD=1
RESULTS="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"; export RESULTS
mkdir -p "$RESULTS/raw"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "binaries: $BIN"
  echo "nproc: $(nproc)"
  echo "cpu: $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
  echo "mem: $(awk '/^MemTotal/{print $2 " kB"}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wrk: $(wrk -v 2>&1 | head -1)"
  echo "h2load: $(h2load --version 2>&1 | head -1)"
  echo "nginx: $(nginx -v 2>&1)"
  echo "haproxy: $(haproxy -v 2>&1 | head -1)"
  echo "knobs: RUNS=$RUNS DURATION=$DURATION WRK_THREADS=$WRK_THREADS WRK_CONNS=$WRK_CONNS H2_CONNS=$H2_CONNS H2_STREAMS=$H2_STREAMS"
  echo "change knobs (defaults where unset): $(env | grep '^CHANGE_' | sort | tr '\n' ' ')"
} >"$RESULTS/machine.txt"
cat "$RESULTS/machine.txt" >&2

start_s=$SECONDS
for part in "${parts[@]}"; do
  echo "== $part ($(date -u +%T), load $(cut -d' ' -f1 /proc/loadavg))" >&2
  "bench/$part.sh"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); wall: $((SECONDS - start_s)) s" >>"$RESULTS/machine.txt"

{
  echo "# tandem benchmark results $(basename "$RESULTS")"; echo
  sed 's/^/    /' "$RESULTS/machine.txt"; echo
  [[ -s "$RESULTS/results.tsv" ]] && python3 bench/parse.py summary "$RESULTS/results.tsv"
  if [[ -s "$RESULTS/cpu.tsv" ]]; then echo "### CPU per request"; echo; python3 bench/parse.py cpusummary "$RESULTS/cpu.tsv"; echo; fi
  if [[ -s "$RESULTS/rate.tsv" ]]; then echo "### Latency at a fixed rate"; echo; python3 bench/parse.py ratesummary "$RESULTS/rate.tsv"; echo; fi
  if [[ -s "$RESULTS/tls.tsv" || -s "$RESULTS/tls-callgrind.tsv" ]]; then echo "### TLS"; echo; python3 bench/parse.py tlssummary "$RESULTS"; echo; fi
  if [[ -s "$RESULTS/scale.tsv" ]]; then echo "### scale"; echo; python3 bench/parse.py scale "$RESULTS/scale.tsv"; fi
  if [[ -s "$RESULTS/changes.tsv" ]]; then echo "### changes"; echo; python3 bench/parse.py changes "$RESULTS/changes.tsv"; fi
} >"$RESULTS/summary.md"
cat "$RESULTS/summary.md"
echo "results: $RESULTS" >&2
