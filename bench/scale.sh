#!/usr/bin/env bash
# Benchmark 4: config scale. For N Ingresses in the manifest directory (one file each, host
# route-I.example.com -> the echo Service; no fallback, so unknown hosts get 404):
#   ready_ms     router start -> /readyz 200 (first full load published)
#   add_ms       an Ingress file for a new host appears (atomic rename) -> first 200 for that host
#   delete_ms    that file is removed -> first 404 for that host
#   rss_kb       router VmRSS after start, and after the changes
# Polls with curl every ~10 ms, bounded (ADD_TIMEOUT s). Sizes: SCALE_SIZES (baseline 10).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${RUNS:=3}" "${BENCH_PORT_BASE:=39000}" "${SCALE_SIZES:=10 1000 5000}" "${ADD_TIMEOUT:=30}"
: "${RESULTS:=$ROOT/bench/results/scale-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS/raw"
bench_tmp
trap bench_cleanup EXIT
# Ctrl-C or a kill: stop (the EXIT trap cleans up) instead of carrying on against dead processes.
trap 'exit 143' INT TERM

B=$BENCH_PORT_BASE
ECHO=$((B + 3)); ROUTER=$((B + 14)); ADMIN=$((B + 114))
for p in $ECHO $ROUTER $ADMIN; do
  port_free "$p" || { echo "bench: port $p busy (set BENCH_PORT_BASE)" >&2; exit 1; }
done
start echo "$BENCH_TMP/echo.log" "$BIN/echo-backend" --listen "127.0.0.1:$ECHO" --service echo
wait_http "http://127.0.0.1:$ECHO/" '"service":"echo"'

now_ms() { echo $(($(date +%s%N) / 1000000)); }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
ingress() { # NAME HOST
  cat <<Y
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: $1, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  ingressClassName: tandem-router
  rules:
    - host: $2
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
Y
}
# poll_status HOST WANT: ms until a request for HOST answers WANT, or -1 after ADD_TIMEOUT s.
poll_status() {
  local host=$1 want=$2 t0=$3 deadline=$(($(now_ms) + ADD_TIMEOUT * 1000)) code
  while (($(now_ms) < deadline)); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -H "Host: $host" "http://127.0.0.1:$ROUTER/" || true)"
    if [[ "$code" == "$want" ]]; then echo $(($(now_ms) - t0)); return; fi
    sleep 0.01
  done
  echo -1
}
out="$RESULTS/scale.tsv"
for n in $SCALE_SIZES; do
  M="$BENCH_TMP/m$n"; STAGE="$BENCH_TMP/stage$n"; mkdir -p "$M" "$STAGE"
  manifest_service echo "$ECHO" >"$M/service.yaml"
  for i in $(seq "$n"); do ingress "route-$i" "route-$i.example.com" >"$M/ingress-$i.yaml"; done
  t0=$(now_ms)
  start "router$n" "$RESULTS/raw/scale-router-$n.log" "$BIN/router" --manifests "$M" \
    --http-listen "127.0.0.1:$ROUTER" --admin-listen "127.0.0.1:$ADMIN" --log-format json \
    --no-access-log --shutdown-delay 0s
  pid_var="PID_router$n"; pid=${!pid_var}
  ready=-1
  for _ in $(seq 6000); do
    if curl -fs --max-time 1 -o /dev/null "http://127.0.0.1:$ADMIN/readyz"; then ready=$(($(now_ms) - t0)); break; fi
    sleep 0.01
  done
  printf '%s\tready_ms\t1\t%s\n' "$n" "$ready" >>"$out"
  code="$(curl -s -o /dev/null -w '%{http_code}' -H "Host: route-$n.example.com" "http://127.0.0.1:$ROUTER/")"
  [[ "$code" == 200 ]] || echo "bench: scale $n: last route answers $code" >&2
  sleep 2 # let start-up allocations settle before sampling RSS
  printf '%s\trss_kb_start\t1\t%s\n' "$n" "$(rss_kb "$pid")" >>"$out"
  for run in $(seq "$RUNS"); do
    host="probe-$run.example.com"
    ingress "probe-$run" "$host" >"$STAGE/probe-$run.yaml"
    t0=$(now_ms); mv "$STAGE/probe-$run.yaml" "$M/probe-$run.yaml"
    printf '%s\tadd_ms\t%s\t%s\n' "$n" "$run" "$(poll_status "$host" 200 "$t0")" >>"$out"
    sleep 1.5 # past the 1 s re-read period, so the delete is a separate change
    t0=$(now_ms); rm "$M/probe-$run.yaml"
    printf '%s\tdelete_ms\t%s\t%s\n' "$n" "$run" "$(poll_status "$host" 404 "$t0")" >>"$out"
    sleep 1.5
  done
  printf '%s\trss_kb_after\t1\t%s\n' "$n" "$(rss_kb "$pid")" >>"$out"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  tail -n $((RUNS * 2 + 3)) "$out" | tr '\n' ' ' >&2; echo >&2
  rm -rf "$M" "$STAGE"
done
