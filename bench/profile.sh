#!/usr/bin/env bash
# Where a proxy's CPU goes per request: the bench/cpu.sh set-up (wrk and echo on CPU 0, the proxy
# with one worker on CPU 1) under one bounded wrk run, sampled by `perf record` (cpu-clock, as
# VMs often have no hardware counters; DWARF call graphs from .eh_frame, no debuginfo needed).
#
#   bench/profile.sh [router-default] [router-nolog] [floor]      (default: all three)
#
# Writes to $RESULTS (default bench/results/profile-<ts>/): perf-CONFIG.data, report-CONFIG-self.txt
# (flat, by DSO + symbol), report-CONFIG-children.txt (inclusive), script-CONFIG.txt (call chains),
# and profile.md: the top entries and tandem's phases converted to CPU µs per request (share of
# samples x the proxy's CPU µs/req in that run, which perf's own sampling inflates slightly).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${DURATION:=10}" "${BENCH_PORT_BASE:=39000}" "${CPU_WRK_THREADS:=1}" "${CPU_WRK_CONNS:=32}"
: "${PERF_FREQ:=999}" "${PROFILE_TOP:=25}"
: "${RESULTS:=$ROOT/bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$RESULTS"
command -v perf >/dev/null || { echo "bench: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
configs=("$@"); ((${#configs[@]})) || configs=(router-default router-nolog floor)
taskset -cp 0 $$ >/dev/null
bench_tmp
CLK=$(getconf CLK_TCK)
B=$BENCH_PORT_BASE
ECHO=$((B + 5)); PROXY=$((B + 74))
for p in $ECHO $PROXY $((PROXY + 100)); do
  port_free "$p" || { echo "bench: port $p busy (set BENCH_PORT_BASE)" >&2; exit 1; }
done
trap bench_cleanup EXIT
# Ctrl-C or a kill: stop (the EXIT trap cleans up) instead of carrying on against dead processes.
trap 'exit 143' INT TERM
start echo "$BENCH_TMP/echo.log" taskset -c 0 "$BIN/echo-backend" --listen "127.0.0.1:$ECHO" --service echo
mkdir -p "$BENCH_TMP/manifests"
{ manifest_service echo "$ECHO"; manifest_fallback_ingress fallback echo; } >"$BENCH_TMP/manifests/router.yaml"

cpu_ticks() { local u s; read -r u s <<<"$(ticks "$1")"; echo $((u + s)); } # PID: utime + stime

for c in "${configs[@]}"; do
  case $c in
    router-default) cmd=("$BIN/router" --threads 1 --manifests "$BENCH_TMP/manifests" --http-listen "127.0.0.1:$PROXY"
                         --admin-listen "127.0.0.1:$((PROXY + 100))" --log-format json --shutdown-delay 0s) ;;
    router-nolog) cmd=("$BIN/router" --threads 1 --manifests "$BENCH_TMP/manifests" --http-listen "127.0.0.1:$PROXY"
                       --admin-listen "127.0.0.1:$((PROXY + 100))" --log-format json --shutdown-delay 0s --no-access-log) ;;
    floor) cmd=("$BIN/bench-floor" "127.0.0.1:$PROXY" "127.0.0.1:$ECHO" 1) ;;
    *) echo "bench: unknown config $c" >&2; exit 2 ;;
  esac
  taskset -c 1 "${cmd[@]}" >/dev/null 2>"$BENCH_TMP/$c.log" &
  pid=$!
  BENCH_PIDS+=("$pid")
  wait_http "http://127.0.0.1:$PROXY/bench" '"service":"echo"'
  taskset -c 0 wrk -t"$CPU_WRK_THREADS" -c"$CPU_WRK_CONNS" -d2s "http://127.0.0.1:$PROXY/bench" >/dev/null 2>&1 || true
  raw="$RESULTS/wrk-$c.txt"
  t0=$(cpu_ticks "$pid")
  taskset -c 0 wrk -t"$CPU_WRK_THREADS" -c"$CPU_WRK_CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$PROXY/bench" >"$raw" 2>&1 &
  wpid=$!
  sleep 1
  # Sampling stops a second before wrk does; perf runs on CPU 0 (with wrk), not on the proxy's CPU.
  taskset -c 0 perf record -q -e cpu-clock -F "$PERF_FREQ" --call-graph dwarf,16384 -p "$pid" \
    -o "$RESULTS/perf-$c.data" -- sleep $((DURATION - 2)) 2>>"$RESULTS/perf-record.log" || true
  wait "$wpid" || true
  t1=$(cpu_ticks "$pid")
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  requests=$(awk '/requests in/{print $1}' "$raw")
  us=$(python3 -c "print(f'{($t1 - $t0) / $CLK * 1e6 / $requests:.2f}')")
  echo "$c: $requests requests, proxy CPU $us µs/req" | tee -a "$RESULTS/cpu.txt" >&2
  perf report -i "$RESULTS/perf-$c.data" --no-children --sort dso,sym --stdio -g none --percent-limit 0 \
    >"$RESULTS/report-$c-self.txt" 2>/dev/null
  perf report -i "$RESULTS/perf-$c.data" --children --sort sym --stdio -g none --percent-limit 1 \
    >"$RESULTS/report-$c-children.txt" 2>/dev/null
  perf script -i "$RESULTS/perf-$c.data" -F comm,tid,time,ip,sym --no-inline >"$RESULTS/script-$c.txt" 2>/dev/null
  python3 "$ROOT/bench/parse.py" perf "$c" "$us" "$RESULTS/report-$c-self.txt" "$PROFILE_TOP" >>"$RESULTS/profile.md"
  python3 "$ROOT/bench/parse.py" perfphases "$c" "$us" "$RESULTS/script-$c.txt" >>"$RESULTS/profile.md"
done
cat "$RESULTS/profile.md"
echo "results: $RESULTS" >&2
