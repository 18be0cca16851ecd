#!/usr/bin/env bash
# Benchmark 6: TLS — what a new connection costs (full and resumed handshakes, TLS 1.3 and 1.2)
# and what a keep-alive request costs, tls-edge vs nginx, and tls-edge with ring vs aws-lc-rs.
# Each server runs one worker pinned to CPU 1; clients and the echo backend are pinned to CPU 0.
# Servers (TLS_SERVERS picks a subset):
#   edge-ring   $BIN/tls-edge (the shipped build) --threads 1, as shipped (tickets + cache on)
#   edge-aws    $TLS_AWS_BIN (default $BIN/tls-edge-aws-lc-rs: `cargo build --release -p tls-edge
#               --features aws-lc-rs`, copied there); skipped when missing
#   floor       $BIN/bench-floor-tls: bare pingora-proxy behind pingora's own rustls listener with
#               its defaults, the same certificate (a lower bound on pingora; not in the default set)
#   nginx       worker_processes 1, the same ECDSA P-256 certificate, ssl_session_tickets on,
#               ssl_session_cache shared:SSL:10m, proxying to the same echo backend
# Loads (TLS_LOADS): new13 new12 resumed13 resumed12 — `openssl s_time -new|-reuse -tls1_x
# -www /` for DURATION seconds: one connection at a time, each a handshake plus one HTTP/1.0
# GET proxied to echo, then close ("r" = resumed, "*" = full, counted); keepalive — wrk -t1
# -c32 over HTTPS keep-alive (record encryption + HTTP; -c1 under callgrind); plain — the same
# over plain HTTP to the same process (the edge's plain listener, a host-less rule): keepalive
# minus plain is what TLS adds to a keep-alive request.
# Figure: the server's CPU time (utime + stime from /proc, all threads, + children) per
# connection (s_time loads) or per request (keepalive). RUNS interleaved rounds, order rotated;
# medians. TLS_CALLGRIND=1 adds user-space instructions per connection/request of each server
# under valgrind --tool=callgrind (counters zeroed before, dumped after one load of
# TLS_CG_SECONDS): exact counts, insensitive to other load on the machine.
# s_time sends no SNI: the edge serves its --default-certificate (the same Secret) then.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${RUNS:=3}" "${DURATION:=5}" "${BENCH_PORT_BASE:=39000}"
: "${TLS_SERVERS:=edge-ring edge-aws nginx}" "${TLS_LOADS:=new13 new12 resumed13 resumed12 keepalive plain}"
: "${TLS_AWS_BIN:=$BIN/tls-edge-aws-lc-rs}" "${TLS_CALLGRIND:=0}" "${TLS_CG_SECONDS:=20}"
KA_CONNS=32
: "${RESULTS:=$ROOT/bench/results/tls-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$RESULTS/raw"
taskset -cp 0 $$ >/dev/null
bench_tmp
CLK=$(getconf CLK_TCK)
trap bench_cleanup_pingora EXIT
trap 'exit 143' INT TERM

read -ra SERVERS <<<"$TLS_SERVERS"
if [[ " ${SERVERS[*]} " == *" edge-aws "* && ! -x $TLS_AWS_BIN ]]; then
  echo "bench: $TLS_AWS_BIN missing, edge-aws skipped" >&2
  SERVERS=("${SERVERS[@]/edge-aws/}"); read -ra SERVERS <<<"${SERVERS[*]}"
fi
read -ra LOADS <<<"$TLS_LOADS"

B=$BENCH_PORT_BASE
ECHO=$((B + 5))
declare -A PORT=([edge-ring]=$((B + 80)) [edge-aws]=$((B + 81)) [nginx]=$((B + 82)) [floor]=$((B + 83)))
declare -A BINARY=([edge-ring]=$BIN/tls-edge [edge-aws]=$TLS_AWS_BIN [floor]=$BIN/bench-floor-tls)
for p in $ECHO "${PORT[@]}"; do
  port_free "$p" || { echo "bench: port $p busy (set BENCH_PORT_BASE)" >&2; exit 1; }
done
HOST=branded-domain.example.com
M="$BENCH_TMP/manifests"
mkdir -p "$M" "$BENCH_TMP/certs"
"$ROOT/scripts/make-example-certs.sh" "$BENCH_TMP/certs" >/dev/null
secret_pem "$BENCH_TMP/certs/branded-domain-tls.yaml" tls.crt >"$BENCH_TMP/certs/tls.crt"
secret_pem "$BENCH_TMP/certs/branded-domain-tls.yaml" tls.key >"$BENCH_TMP/certs/tls.key"
cp "$BENCH_TMP/certs/branded-domain-tls.yaml" "$M/"
{ manifest_service echo "$ECHO"; manifest_edge_ingress "$HOST" "$HOST" "$HOST" echo
  # s_time sends neither SNI nor Host: a host-less rule takes its requests.
  cat <<EOF
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: no-host, namespace: default}
spec:
  ingressClassName: tandem-edge
  rules:
    - http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
---
EOF
} >"$M/bench.yaml"

start echo "$BENCH_TMP/echo.log" taskset -c 0 "$BIN/echo-backend" --listen "127.0.0.1:$ECHO" --service echo

# edge_cmd NAME: the command line of an edge server (without the CPU pinning / valgrind).
edge_cmd() {
  local name=$1
  echo "${BINARY[$name]}" --threads 1 --manifests "$M" --https-listen "127.0.0.1:${PORT[$name]}" \
    --http-listen "127.0.0.1:$((PORT[$name] + 10))" --admin-listen "127.0.0.1:$((PORT[$name] + 100))" \
    --default-certificate "default/$HOST" --log-format json --shutdown-delay 0s
}
mkdir -p "$BENCH_TMP/nginx"
nginx_conf() { # MASTER(on|off) PORT
  cat <<NGX
worker_processes 1;
master_process $1;
daemon off;
pid $BENCH_TMP/nginx/nginx-$2.pid;
error_log $BENCH_TMP/nginx/error-$2.log warn;
events { worker_connections 4096; }
http {
$(nginx_http_common)
  upstream echo { server 127.0.0.1:$ECHO; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$2 ssl http2;
    listen 127.0.0.1:$(($2 + 10));
    server_name $HOST;
    ssl_certificate $BENCH_TMP/certs/tls.crt;
    ssl_certificate_key $BENCH_TMP/certs/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:10m;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_set_header Host \$host;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
NGX
}

# start_server NAME [WRAPPER...]: starts NAME pinned to CPU 1, sets SPID (the pid to measure).
start_server() {
  local name=$1; shift
  if [[ $name == nginx ]]; then
    nginx_conf "$([[ $# -gt 0 ]] && echo off || echo on)" "${PORT[nginx]}" >"$BENCH_TMP/nginx/nginx.conf"
    start "$name" "$BENCH_TMP/nginx/stderr.log" taskset -c 1 "$@" nginx -p "$BENCH_TMP/nginx" \
      -c "$BENCH_TMP/nginx/nginx.conf" -e "$BENCH_TMP/nginx/error-${PORT[nginx]}.log"
  elif [[ $name == floor ]]; then
    start "$name" /dev/null taskset -c 1 "$@" "$BIN/bench-floor-tls" "127.0.0.1:${PORT[floor]}" \
      "127.0.0.1:$((PORT[floor] + 10))" "127.0.0.1:$ECHO" "$BENCH_TMP/certs/tls.crt" "$BENCH_TMP/certs/tls.key"
    PINGORA_PIDS+=("${BENCH_PIDS[-1]}")
  else
    # shellcheck disable=SC2046  # the command line is words
    start "$name" /dev/null taskset -c 1 "$@" $(edge_cmd "$name")
    PINGORA_PIDS+=("${BENCH_PIDS[-1]}")
  fi
  local v="PID_${name//-/_}"
  SPID=${!v}
  wait_http "https://$HOST:${PORT[$name]}/bench" '"service":"echo"' --max-time 30 \
    --resolve "$HOST:${PORT[$name]}:127.0.0.1" --cacert "$BENCH_TMP/certs/example-ca.crt"
}

# load NAME LOAD SECONDS RAW: runs one load against NAME, writes its output to RAW and prints
# "COUNT FULL RESUMED" (COUNT = connections or requests).
load() {
  local name=$1 l=$2 secs=$3 raw=$4 port=${PORT[$1]} v mode
  case $l in
    keepalive)
      echo "+ wrk -t1 -c$KA_CONNS -d${secs}s https://$HOST:$port/bench" >"$raw"
      taskset -c 0 wrk -t1 -c"$KA_CONNS" -d"${secs}s" --timeout 5s -s "$ROOT/bench/resolve-loopback.lua" \
        "https://$HOST:$port/bench" >>"$raw" 2>&1 || true
      python3 -c 'import re,sys; m=re.search(r"(\d+) requests in", open(sys.argv[1]).read()); print(m.group(1) if m else 0, 0, 0)' "$raw"
      return;;
    plain)
      echo "+ wrk -t1 -c$KA_CONNS -d${secs}s http://127.0.0.1:$((port + 10))/bench" >"$raw"
      taskset -c 0 wrk -t1 -c"$KA_CONNS" -d"${secs}s" --timeout 5s "http://127.0.0.1:$((port + 10))/bench" >>"$raw" 2>&1 || true
      python3 -c 'import re,sys; m=re.search(r"(\d+) requests in", open(sys.argv[1]).read()); print(m.group(1) if m else 0, 0, 0)' "$raw"
      return;;
    new13) mode=-new; v=-tls1_3;; new12) mode=-new; v=-tls1_2;;
    resumed13) mode=-reuse; v=-tls1_3;; resumed12) mode=-reuse; v=-tls1_2;;
    *) echo "bench: unknown load $l" >&2; exit 1;;
  esac
  echo "+ openssl s_time -connect 127.0.0.1:$port $mode $v -www / -time $secs" >"$raw"
  timeout $((secs + 30)) taskset -c 0 openssl s_time -connect "127.0.0.1:$port" "$mode" "$v" -www / \
    -time "$secs" >>"$raw" 2>&1 || true
  python3 - "$raw" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
m = re.findall(r"(\d+) connections in [\d.]+ real seconds", t)
marks = "".join(re.findall(r"^([r*]+)\s*$", t, re.M))
print(m[-1] if m else 0, marks.count("*"), marks.count("r"))
PY
}

# One line of the results: config load run count full resumed utime stime clk us_per_unit raw
{
  echo "date: $(date -u +%FT%TZ); commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
  echo "openssl: $(openssl version); nginx: $(nginx -v 2>&1); wrk: $(wrk -v 2>&1 | head -1)"
  for s in "${SERVERS[@]}"; do [[ $s == nginx ]] || echo "$s: ${BINARY[$s]}"; done
  echo "knobs: RUNS=$RUNS DURATION=$DURATION TLS_SERVERS=${SERVERS[*]} TLS_LOADS=${LOADS[*]}"
} >"$RESULTS/raw/tls-machine.txt"

if [[ $TLS_CALLGRIND != 1 || ${TLS_CPU:-1} == 1 ]]; then
  for s in "${SERVERS[@]}"; do start_server "$s"; printf -v "SPID_${s//-/_}" '%s' "$SPID"; done
  # What each server negotiates with this client (recorded, not measured).
  for s in "${SERVERS[@]}"; do
    for v in -tls1_3 -tls1_2; do
      echo | timeout 10 openssl s_client -connect "127.0.0.1:${PORT[$s]}" $v 2>/dev/null |
        grep -E "^(New|Reused)|Server Temp Key|Peer signature type" | sed "s/^/$s $v: /"
    done
  done >>"$RESULTS/raw/tls-machine.txt"
  # warm-up, not recorded
  for s in "${SERVERS[@]}"; do load "$s" new13 1 /dev/null >/dev/null; load "$s" keepalive 1 /dev/null >/dev/null; done
  pairs=()
  for l in "${LOADS[@]}"; do for s in "${SERVERS[@]}"; do pairs+=("$s:$l"); done; done
  for run in $(seq "$RUNS"); do
    for p in $(in_round_order "$run" "${pairs[@]}"); do
      s=${p%%:*}; l=${p#*:}
      v="SPID_${s//-/_}"; pid=${!v}
      raw="$RESULTS/raw/tls-$s-$l-$run.txt"
      read -r u0 s0 <<<"$(ticks "$pid")"
      read -r count full resumed <<<"$(load "$s" "$l" "$DURATION" "$raw")"
      read -r u1 s1 <<<"$(ticks "$pid")"
      us=$(python3 -c "import sys; c=int(sys.argv[1]); print(f'{(int(sys.argv[2])/int(sys.argv[3])*1e6/c) if c else float(\"nan\"):.1f}')" \
        "$count" "$((u1 - u0 + s1 - s0))" "$CLK")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$l" "$run" "$count" "$full" "$resumed" \
        "$((u1 - u0))" "$((s1 - s0))" "$CLK" "$us" "$(basename "$raw")" | tee -a "$RESULTS/tls.tsv" >&2
    done
  done
  bench_cleanup_pingora
  PINGORA_PIDS=(); BENCH_PIDS=()
  start echo "$BENCH_TMP/echo.log" taskset -c 0 "$BIN/echo-backend" --listen "127.0.0.1:$ECHO" --service echo
fi

if [[ $TLS_CALLGRIND == 1 ]]; then
  command -v valgrind >/dev/null || { echo "bench: valgrind missing" >&2; exit 1; }
  # one keep-alive connection: its handshake is noise against thousands of requests
  KA_CONNS=1
  for s in "${SERVERS[@]}"; do
    cg="$BENCH_TMP/cg-$s"
    mkdir -p "$cg"
    start_server "$s" valgrind --tool=callgrind --callgrind-out-file="$cg/out.%p" --dump-instr=no
    # valgrind is the measured process itself (exec'd by taskset)
    for l in "${LOADS[@]}"; do
      load "$s" "$l" 2 /dev/null >/dev/null # warm-up under valgrind
      callgrind_control -z "$SPID" >/dev/null
      raw="$RESULTS/raw/tls-cg-$s-$l.txt"
      read -r count full resumed <<<"$(load "$s" "$l" "$TLS_CG_SECONDS" "$raw")"
      before=$(find "$cg" -type f | wc -l)
      callgrind_control -d "$s-$l" "$SPID" >/dev/null
      for _ in $(seq 100); do (($(find "$cg" -type f | wc -l) > before)) && break; sleep 0.1; done
      dump=$(find "$cg" -type f -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
      ir=$(awk '/^(summary|totals):/{print $2; exit}' "$dump")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$l" "$count" "$full" "$resumed" "$ir" \
        "$(python3 -c "import sys; print(int(int(sys.argv[1]) / max(1, int(sys.argv[2]))))" "$ir" "$count")" |
        tee -a "$RESULTS/tls-callgrind.tsv" >&2
    done
    kill -INT "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true
  done
fi

python3 "$ROOT/bench/parse.py" tlssummary "$RESULTS" | tee "$RESULTS/tls-summary.md"
