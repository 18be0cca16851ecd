#!/usr/bin/env bash
# Instructions per request (user space, the proxy process only), counted by valgrind's callgrind:
# stable on a busy machine where CPU time is not. For each configuration the proxy runs under
# callgrind with one worker; after a warm-up the counters are zeroed, a fixed number of requests
# is sent (h2load, HTTP/1.1 keep-alive, 8 connections) and the counters dumped; then the same
# for an idle interval as long as the load took. Per request = (Ir under load - Ir idle) / N.
# The load counts repeat within 0.1 %; an idle interval now and then catches a burst of
# background work (timers, the config source), so the summary subtracts each configuration's
# smallest idle count (instructions.tsv keeps every raw count).
#
#   bench/instructions.sh [router-default] [router-nolog] [floor] [floor-mimalloc] [floor-ingress] [lean] [hyper] [raw]
#   (default: the first three; the others are the prototypes of crates/bench-floor)
#
# Knobs: INSTR_REQUESTS=2000 INSTR_CONNS=8 RUNS=3 (rounds, interleaved; medians) BENCH_PORT_BASE.
# Writes $RESULTS (default bench/results/instructions-<ts>/): instructions.tsv (one line per
# run), callgrind.out.* of every load interval (read with callgrind_annotate), summary.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${INSTR_REQUESTS:=2000}" "${INSTR_CONNS:=8}" "${RUNS:=3}" "${BENCH_PORT_BASE:=39000}"
: "${RESULTS:=$ROOT/bench/results/instructions-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$RESULTS"
for t in valgrind callgrind_control h2load; do
  command -v "$t" >/dev/null || { echo "bench: $t is not installed (apt-get install valgrind nghttp2-client)" >&2; exit 1; }
done
configs=("$@"); ((${#configs[@]})) || configs=(router-default router-nolog floor)
bench_tmp
B=$BENCH_PORT_BASE
ECHO=$((B + 5)); PROXY=$((B + 80))
for p in $ECHO $PROXY $((PROXY + 100)); do
  port_free "$p" || { echo "bench: port $p busy (set BENCH_PORT_BASE)" >&2; exit 1; }
done
trap bench_cleanup EXIT
trap 'exit 143' INT TERM
start echo "$BENCH_TMP/echo.log" "$BIN/echo-backend" --listen "127.0.0.1:$ECHO" --service echo
mkdir -p "$BENCH_TMP/manifests"
{ manifest_service echo "$ECHO"; manifest_fallback_ingress fallback echo; } >"$BENCH_TMP/manifests/router.yaml"
URL="http://127.0.0.1:$PROXY/bench"

# total Ir of a callgrind dump file
ir() { awk '/^(summary|totals):/{print $2; exit}' "$1"; }

# measure CONFIG RUN: appends "config run requests ir_load ir_idle per_request" to instructions.tsv
measure() {
  local c=$1 run=$2 cmd pid out="$RESULTS/cg-$1-$2" i t0 t1 secs load idle ok
  case $c in
    router-default) cmd=("$BIN/router" --threads 1 --manifests "$BENCH_TMP/manifests" --http-listen "127.0.0.1:$PROXY"
                         --admin-listen "127.0.0.1:$((PROXY + 100))" --log-format json --shutdown-delay 0s) ;;
    router-nolog) cmd=("$BIN/router" --threads 1 --manifests "$BENCH_TMP/manifests" --http-listen "127.0.0.1:$PROXY"
                       --admin-listen "127.0.0.1:$((PROXY + 100))" --log-format json --shutdown-delay 0s --no-access-log) ;;
    floor) cmd=("$BIN/bench-floor" "127.0.0.1:$PROXY" "127.0.0.1:$ECHO" 1) ;;
    floor-mimalloc) cmd=("$BIN/bench-floor-mimalloc" "127.0.0.1:$PROXY" "127.0.0.1:$ECHO" 1) ;;
    floor-ingress) cmd=("$BIN/bench-floor-ingress" "127.0.0.1:$PROXY" "127.0.0.1:$ECHO" 1) ;;
    lean) cmd=("$BIN/bench-lean" "127.0.0.1:$PROXY" "127.0.0.1:$ECHO" 1) ;;
    hyper) cmd=("$BIN/bench-hyper" "127.0.0.1:$PROXY" "127.0.0.1:$ECHO") ;;
    raw) cmd=("$BIN/bench-raw" "127.0.0.1:$PROXY" "127.0.0.1:$ECHO") ;;
    *) echo "bench: unknown config $c" >&2; exit 2 ;;
  esac
  valgrind --tool=callgrind --callgrind-out-file="$out.%p" "${cmd[@]}" >/dev/null 2>"$BENCH_TMP/$c-$run.log" &
  pid=$!
  BENCH_PIDS+=("$pid")
  ok=0
  for i in $(seq 600); do # up to 60 s: everything is ~50x slower under valgrind
    if curl -sf --max-time 2 "$URL" 2>/dev/null | grep -q '"service":"echo"'; then ok=1; break; fi
    sleep 0.1
  done
  ((ok)) || { echo "bench: $c did not come up under valgrind" >&2; tail "$BENCH_TMP/$c-$run.log" >&2; exit 1; }
  # Warm-up: pools, metric series, lazily built state.
  h2load --h1 -n 500 -c "$INSTR_CONNS" "$URL" >/dev/null 2>&1
  sleep 1
  callgrind_control -z "$pid" >/dev/null 2>&1
  t0=$(date +%s.%N)
  h2load --h1 -n "$INSTR_REQUESTS" -c "$INSTR_CONNS" "$URL" >"$out.h2load" 2>&1
  t1=$(date +%s.%N)
  grep -q "requests: $INSTR_REQUESTS total, $INSTR_REQUESTS started, $INSTR_REQUESTS done, $INSTR_REQUESTS succeeded, 0 failed, 0 errored, 0 timeout" "$out.h2load" ||
    { echo "bench: $c: not every request succeeded" >&2; grep requests: "$out.h2load" >&2; exit 1; }
  sleep 0.5 # the access-log writer finishes its queue
  callgrind_control -d "load-$c-$run" "$pid" >/dev/null 2>&1
  secs=$(python3 -c "print(max(1.0, $t1 - $t0 + 0.5))")
  sleep "$secs"
  callgrind_control -d "idle-$c-$run" "$pid" >/dev/null 2>&1
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  load=$(ir "$out.$pid.1"); idle=$(ir "$out.$pid.2")
  mv "$out.$pid.1" "$RESULTS/callgrind.out.$c.$run"
  mv "$out.$pid.2" "$RESULTS/callgrind.idle.$c.$run"
  rm -f "$out.$pid"
  python3 -c "print('\t'.join(map(str, ['$c', '$run', $INSTR_REQUESTS, $load, $idle, round(($load - $idle) / $INSTR_REQUESTS)])))" |
    tee -a "$RESULTS/instructions.tsv" >&2
}

for run in $(seq "$RUNS"); do
  for c in $(in_round_order "$run" "${configs[@]}"); do measure "$c" "$run"; done
done
{
  echo "| config | instructions/request, median (min–max) | runs |"
  echo "|---|---|---|"
  python3 - "$RESULTS/instructions.tsv" "${configs[@]}" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
for c in sys.argv[2:]:
    mine = [r for r in rows if r[0] == c]
    if not mine:
        continue
    idle = min(int(r[4]) for r in mine)
    v = sorted(round((int(r[3]) - idle) / int(r[2])) for r in mine)
    if v:
        print(f"| {c} | {statistics.median(v):,.0f} ({v[0]:,}–{v[-1]:,}) | {len(v)} |")
PY
} | tee "$RESULTS/summary.md"
echo "per function: callgrind_annotate $RESULTS/callgrind.out.${configs[0]}.1 | head -60" >&2
echo "results: $RESULTS" >&2
