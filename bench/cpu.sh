#!/usr/bin/env bash
# Benchmark 5: CPU per request, side by side. wrk and the echo backend are pinned to CPU 0, every
# proxy runs ONE worker pinned to CPU 1; the headline is the proxy's CPU time (utime + stime from
# /proc/PID/stat, all threads, plus child processes for nginx) per request completed, with the
# user/sys split, then wrk's p50/p99. Configurations (CPU_CONFIGS picks a subset):
#   direct              wrk -> echo (no proxy: latency only)
#   router-default      router --threads 1, as shipped (JSON access log to /dev/null, metrics)
#   router-nolog        the same with --no-access-log
#   floor               bench-floor: bare pingora proxy to a fixed upstream (crates/bench-floor)
#   floor-mimalloc      the same with mimalloc, the tiers' allocator (not in the default set)
#   floor-ingress       floor-mimalloc plus what no ingress-nginx-compatible proxy can skip (the
#                       forwarded headers and request id ingress-nginx sends, upstream timeouts)
#                       through pingora's API: a lower bound for the router (not in the default set)
#   lean                prototype: HTTP/1.1 on pingora-core's session and pool APIs without
#                       pingora-proxy (crates/bench-floor `Lean`; not in the default set)
#   hyper               prototype: the same on hyper's HTTP/1.1 server and client connections (not
#                       in the default set)
#   raw                 lower bound: tokio + httparse, no pingora, bodiless requests only (not in
#                       the default set)
#   nginx               nginx worker_processes 1, configured like ingress-nginx, access_log off
#   nginx-jsonlog       the same with a JSON access log to /dev/null
#   haproxy             haproxy nbthread 1, mode http, option forwardfor, http-reuse always
#   edge-tls[-nolog]    wrk over https (keep-alive) -> tls-edge --threads 1 -> echo
#   nginx-tls           wrk over https (keep-alive) -> nginx TLS -> echo
#   chain[-nolog]       wrk over https -> tls-edge -> h2c -> router -> echo (both tiers on CPU 1,
#                       CPU summed; the router's Service port has appProtocol kubernetes.io/h2c)
# Then, with CPU_RATE > 0, the plain-HTTP configurations at a fixed rate below saturation
# (bench-load: CPU_RATE requests/s over CPU_RATE_CONNS keep-alive connections, open loop, pinned
# to CPU 0): p50/p99/p99.9 in µs and CPU µs per request at that rate, RUNS interleaved rounds
# (CPU_CLOSED_LOOP=0 runs only this part).
# Each round runs every configuration once, order rotated; a run during which other processes
# used more than CPU_MAX_FOREIGN of CPU 1 is flagged "disturbed" and repeated once (medians use
# the undisturbed runs where there are any). Usually driven by `bench/run.sh cpu`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${RUNS:=3}" "${DURATION:=10}" "${BENCH_PORT_BASE:=39000}"
: "${CPU_WRK_THREADS:=1}" "${CPU_WRK_CONNS:=32}" "${CPU_MAX_FOREIGN:=0.4}"
: "${CPU_RATE:=8000}" "${CPU_RATE_CONNS:=16}" "${CPU_CLOSED_LOOP:=1}"
: "${CPU_CONFIGS:=direct router-default router-nolog floor nginx nginx-jsonlog haproxy edge-tls edge-tls-nolog nginx-tls chain chain-nolog}"
: "${RESULTS:=$ROOT/bench/results/cpu-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$RESULTS/raw"
for b in bench-floor bench-floor-mimalloc bench-floor-ingress bench-lean bench-hyper bench-raw bench-load; do
  [[ -x "$BIN/$b" ]] || { echo "bench: missing $BIN/$b (cargo build --release)" >&2; exit 1; }
done
# The driver (curl, python, wrk) stays off the proxies' CPU; the proxies are moved to CPU 1.
taskset -cp 0 $$ >/dev/null
bench_tmp
CLK=$(getconf CLK_TCK)
trap bench_cleanup_pingora EXIT
trap 'exit 143' INT TERM

B=$BENCH_PORT_BASE
ECHO=$((B + 4))
declare -A PORT=([router-default]=$((B + 60)) [router-nolog]=$((B + 61)) [router-chain]=$((B + 62))
  [router-chain-nolog]=$((B + 63)) [floor]=$((B + 64)) [nginx]=$((B + 65)) [nginx-jsonlog]=$((B + 66))
  [nginx-tls]=$((B + 67)) [haproxy]=$((B + 68)) [edge-tls]=$((B + 70)) [edge-tls-nolog]=$((B + 71))
  [chain]=$((B + 72)) [chain-nolog]=$((B + 73)) [floor-mimalloc]=$((B + 74)) [lean]=$((B + 75)) [raw]=$((B + 76)) [hyper]=$((B + 77))
  [floor-ingress]=$((B + 78)))
for p in $ECHO "${PORT[@]}"; do
  port_free "$p" || { echo "bench: port $p busy (set BENCH_PORT_BASE)" >&2; exit 1; }
done
HOST=branded-domain.example.com
M="$BENCH_TMP/manifests"
mkdir -p "$M/router" "$M/edge" "$M/chain" "$M/chain-nolog" "$BENCH_TMP/certs"
"$ROOT/scripts/make-example-certs.sh" "$BENCH_TMP/certs" >/dev/null
secret_pem "$BENCH_TMP/certs/branded-domain-tls.yaml" tls.crt >"$BENCH_TMP/certs/tls.crt"
secret_pem "$BENCH_TMP/certs/branded-domain-tls.yaml" tls.key >"$BENCH_TMP/certs/tls.key"
{ manifest_service echo "$ECHO"; manifest_fallback_ingress fallback echo; } >"$M/router/bench.yaml"
cp "$BENCH_TMP/certs/branded-domain-tls.yaml" "$M/edge/"
{ manifest_service echo "$ECHO"; manifest_edge_ingress "$HOST" "$HOST" "$HOST" echo; } >"$M/edge/bench.yaml"
for c in chain chain-nolog; do
  cp "$BENCH_TMP/certs/branded-domain-tls.yaml" "$M/$c/"
  { manifest_service echo "$ECHO"; manifest_fallback_ingress fallback echo
    manifest_service routing-tier "${PORT[router-$c]}" kubernetes.io/h2c
    manifest_edge_ingress "$HOST" "$HOST" "$HOST" routing-tier; } >"$M/$c/bench.yaml"
done

# --- processes ----------------------------------------------------------------------------------
start echo "$BENCH_TMP/echo.log" taskset -c 0 "$BIN/echo-backend" --listen "127.0.0.1:$ECHO" --service echo

pingora() { # NAME CMD...: a pingora-based process pinned to CPU 1, stdout (access log) to /dev/null
  local name=$1; shift
  start "$name" /dev/null taskset -c 1 "$@"
  PINGORA_PIDS+=("${BENCH_PIDS[-1]}")
}
router() { # NAME MANIFESTS [FLAGS...]
  local name=$1 dir=$2; shift 2
  pingora "$name" "$BIN/router" --threads 1 --manifests "$dir" --http-listen "127.0.0.1:${PORT[$name]}" \
    --admin-listen "127.0.0.1:$((PORT[$name] + 100))" --log-format json --shutdown-delay 0s "$@"
}
edge() { # NAME MANIFESTS [FLAGS...]
  local name=$1 dir=$2; shift 2
  pingora "$name" "$BIN/tls-edge" --threads 1 --manifests "$dir" --https-listen "127.0.0.1:${PORT[$name]}" \
    --http-listen "127.0.0.1:$((PORT[$name] + 10))" --admin-listen "127.0.0.1:$((PORT[$name] + 100))" \
    --log-format json --shutdown-delay 0s "$@"
}
router router-default "$M/router"
router router-nolog "$M/router" --no-access-log
router router-chain "$M/chain" --trusted-proxies 127.0.0.1/32
router router-chain-nolog "$M/chain-nolog" --trusted-proxies 127.0.0.1/32 --no-access-log
pingora floor "$BIN/bench-floor" "127.0.0.1:${PORT[floor]}" "127.0.0.1:$ECHO" 1
pingora floor-mimalloc "$BIN/bench-floor-mimalloc" "127.0.0.1:${PORT[floor-mimalloc]}" "127.0.0.1:$ECHO" 1
pingora floor-ingress "$BIN/bench-floor-ingress" "127.0.0.1:${PORT[floor-ingress]}" "127.0.0.1:$ECHO" 1
pingora lean "$BIN/bench-lean" "127.0.0.1:${PORT[lean]}" "127.0.0.1:$ECHO" 1
pingora raw "$BIN/bench-raw" "127.0.0.1:${PORT[raw]}" "127.0.0.1:$ECHO"
pingora hyper "$BIN/bench-hyper" "127.0.0.1:${PORT[hyper]}" "127.0.0.1:$ECHO"
edge edge-tls "$M/edge"
edge edge-tls-nolog "$M/edge" --no-access-log
edge chain "$M/chain"
edge chain-nolog "$M/chain-nolog" --no-access-log

# nginx as ingress-nginx renders a location (the same proxy_set_header list as its template's
# defaults, proxy_buffering off, HTTP/1.1 to an upstream with keepalive), one worker. One
# instance serves the three nginx configurations.
mkdir -p "$BENCH_TMP/nginx"
# shellcheck disable=SC2016  # nginx variables, not shell ones
NGX_PROXY='
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Request-ID $req_id;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Scheme $scheme;
      proxy_set_header X-Scheme $scheme;
      proxy_set_header X-Original-Forwarded-For $http_x_forwarded_for;
      proxy_set_header Proxy "";'
cat >"$BENCH_TMP/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $BENCH_TMP/nginx.pid;
error_log $BENCH_TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_http_common)
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  map \$http_x_request_id \$req_id { default \$http_x_request_id; '' \$request_id; }
  log_format json escape=json '{"time":"\$time_iso8601","request_id":"\$req_id","remote_addr":"\$remote_addr",'
    '"method":"\$request_method","host":"\$host","uri":"\$request_uri","protocol":"\$server_protocol",'
    '"status":\$status,"bytes_sent":\$bytes_sent,"request_time":\$request_time,'
    '"upstream_addr":"\$upstream_addr","upstream_status":"\$upstream_status",'
    '"upstream_response_time":"\$upstream_response_time","user_agent":"\$http_user_agent"}';
  upstream echo { server 127.0.0.1:$ECHO; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${PORT[nginx]};
    location / {$NGX_PROXY
    }
  }
  server {
    listen 127.0.0.1:${PORT[nginx-jsonlog]};
    access_log /dev/null json;
    location / {$NGX_PROXY
    }
  }
  server {
    listen 127.0.0.1:${PORT[nginx-tls]} ssl http2;
    server_name $HOST;
    ssl_certificate $BENCH_TMP/certs/tls.crt;
    ssl_certificate_key $BENCH_TMP/certs/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {$NGX_PROXY
    }
  }
}
NGX
start nginx "$BENCH_TMP/nginx/stderr.log" taskset -c 1 nginx -p "$BENCH_TMP/nginx" -c "$BENCH_TMP/nginx/nginx.conf" -e "$BENCH_TMP/nginx/error.log"

cat >"$BENCH_TMP/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  option forwardfor
  default_backend be
backend be
  http-reuse always
  server echo 127.0.0.1:$ECHO
HAP
start haproxy "$BENCH_TMP/haproxy.log" taskset -c 1 haproxy -db -f "$BENCH_TMP/haproxy.cfg"

# Which processes each configuration's CPU is read from (NAME:PID, summed), and its URL.
declare -A PIDS URL
PIDS[direct]=""; URL[direct]="http://127.0.0.1:$ECHO/bench"
for c in router-default router-nolog floor floor-mimalloc floor-ingress lean hyper raw nginx nginx-jsonlog haproxy; do
  URL[$c]="http://127.0.0.1:${PORT[$c]}/bench"
done
for c in edge-tls edge-tls-nolog nginx-tls chain chain-nolog; do URL[$c]="https://$HOST:${PORT[$c]}/bench"; done
for c in router-default router-nolog floor floor-mimalloc floor-ingress lean hyper raw nginx haproxy edge-tls edge-tls-nolog; do
  v="PID_${c//-/_}"; PIDS[$c]="$c:${!v}"
done
PIDS[nginx-jsonlog]=${PIDS[nginx]}; PIDS[nginx-tls]=${PIDS[nginx]}
# shellcheck disable=SC2154  # PID_* are set by start()
PIDS[chain]="edge:$PID_chain router:$PID_router_chain"
# shellcheck disable=SC2154
PIDS[chain-nolog]="edge:$PID_chain_nolog router:$PID_router_chain_nolog"

read -ra CONFIGS <<<"$CPU_CONFIGS"
CA=(--cacert "$BENCH_TMP/certs/example-ca.crt")
LUA=(-s "$ROOT/bench/resolve-loopback.lua")
for c in "${CONFIGS[@]}"; do
  if [[ ${URL[$c]} == https://* ]]; then
    wait_http "${URL[$c]}" '"service":"echo"' --resolve "$HOST:${PORT[$c]}:127.0.0.1" "${CA[@]}"
  else
    wait_http "${URL[$c]}" '"service":"echo"'
  fi
done

# --- measurement helpers ------------------------------------------------------------------------
cpu_busy() { # N: busy ticks of CPU N since boot (everything but idle and iowait)
  awk -v c="cpu$1" '$1==c{print $2+$3+$4+$7+$8+$9}' /proc/stat
}
wrk_args() { # CONFIG
  if [[ ${URL[$1]} == https://* ]]; then echo "${LUA[@]}"; fi
}

# run_cpu CONFIG RUN: one bounded load run; appends a line to cpu.tsv and to results.tsv.
run_cpu() {
  local c=$1 run=$2 raw="$RESULTS/raw/cpu-$1-$2.wrk.txt" la0 la1 entry name bu bs au as
  local -A t0 t1
  local parts=() u=0 s=0 b1_0 b1_1 b0_0 b0_1
  # shellcheck disable=SC2046
  echo "+ taskset -c 0 wrk -t$CPU_WRK_THREADS -c$CPU_WRK_CONNS -d${DURATION}s --latency $(wrk_args "$c") ${URL[$c]}" >"$raw"
  la0=$(cut -d' ' -f1-3 /proc/loadavg)
  for entry in ${PIDS[$c]}; do t0[$entry]=$(ticks "${entry#*:}"); done
  b1_0=$(cpu_busy 1); b0_0=$(cpu_busy 0)
  # shellcheck disable=SC2046
  taskset -c 0 wrk -t"$CPU_WRK_THREADS" -c"$CPU_WRK_CONNS" -d"${DURATION}s" --timeout 5s --latency \
    $(wrk_args "$c") "${URL[$c]}" >>"$raw" 2>&1 || true
  b1_1=$(cpu_busy 1); b0_1=$(cpu_busy 0)
  for entry in ${PIDS[$c]}; do t1[$entry]=$(ticks "${entry#*:}"); done
  la1=$(cut -d' ' -f1-3 /proc/loadavg)
  for entry in ${PIDS[$c]}; do
    name=${entry%%:*}
    read -r bu bs <<<"${t0[$entry]}"; read -r au as <<<"${t1[$entry]}"
    u=$((u + au - bu)); s=$((s + as - bs))
    parts+=("$name=$((au - bu))+$((as - bs))")
  done
  local p="${parts[*]}"; p=${p// /,}
  {
    echo "# proxy ticks (CLK_TCK $CLK): utime $u stime $s (${p:--}); CPU1 busy $((b1_1 - b1_0)), CPU0 busy $((b0_1 - b0_0))"
    echo "# load average before: $la0; after: $la1"
  } >>"$raw"
  python3 "$ROOT/bench/parse.py" cpu "$raw" "$c" "$run" "$u" "$s" "$CLK" "$DURATION" \
    "$((b1_1 - b1_0))" "$((b0_1 - b0_0))" "${la0%% *}" "${la1%% *}" "$CPU_MAX_FOREIGN" "${p:--}" >>"$RESULTS/cpu.tsv"
  python3 "$ROOT/bench/parse.py" wrk "$raw" cpu "$c" "$run" >>"$RESULTS/results.tsv"
}

# Warm-up (not recorded): fills the upstream pools, the h2c connection, caches.
for c in "${CONFIGS[@]}"; do
  # shellcheck disable=SC2046
  taskset -c 0 wrk -t"$CPU_WRK_THREADS" -c"$CPU_WRK_CONNS" -d2s $(wrk_args "$c") "${URL[$c]}" >/dev/null 2>&1 || true
done
# The edge -> router hop of the chains is multiplexed h2c: a handful of connections, not one per
# client connection (recorded, and checked loosely).
for c in chain chain-nolog; do
  [[ " ${CONFIGS[*]} " == *" $c "* ]] || continue
  taskset -c 0 wrk -t1 -c"$CPU_WRK_CONNS" -d2s "${LUA[@]}" "${URL[$c]}" >/dev/null 2>&1 &
  wpid=$!
  sleep 1
  n=$(ss -Htn state established "( dport = :${PORT[router-$c]} )" | wc -l)
  wait "$wpid" || true
  echo "$c: $n established edge -> router connections under $CPU_WRK_CONNS client connections" | tee -a "$RESULTS/raw/cpu-h2c-check.txt" >&2
  ((n < CPU_WRK_CONNS)) || { echo "bench: $c edge -> router is not multiplexed" >&2; exit 1; }
done

echo "knobs: RUNS=$RUNS DURATION=$DURATION CPU_WRK_THREADS=$CPU_WRK_THREADS CPU_WRK_CONNS=$CPU_WRK_CONNS CPU_MAX_FOREIGN=$CPU_MAX_FOREIGN CLK_TCK=$CLK" >>"$RESULTS/raw/cpu-rounds.txt"
for run in $(seq "$RUNS"); do
  ((CPU_CLOSED_LOOP)) || break # only the fixed-rate part
  echo "round $run start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/raw/cpu-rounds.txt"
  for c in $(in_round_order "$run" "${CONFIGS[@]}"); do
    run_cpu "$c" "$run"
    line=$(tail -n1 "$RESULTS/cpu.tsv")
    if [[ $(cut -f18 <<<"$line") == 1 ]]; then
      echo "bench: $c round $run disturbed (foreign CPU 1 share $(cut -f13 <<<"$line")), repeating once" >&2
      run_cpu "$c" "${run}r"
      line=$(tail -n1 "$RESULTS/cpu.tsv")
    fi
    cut -f1,2,5,9,10,11,13 <<<"$line" | tr '\t' ' ' >&2
  done
  echo "round $run end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/raw/cpu-rounds.txt"
done
for c in "${CONFIGS[@]}"; do
  if [[ ${URL[$c]} == https://* ]]; then
    wait_http "${URL[$c]}" '"service":"echo"' --resolve "$HOST:${PORT[$c]}:127.0.0.1" "${CA[@]}"
  else
    wait_http "${URL[$c]}" '"service":"echo"'
  fi
done
if ((CPU_CLOSED_LOOP)); then
  python3 "$ROOT/bench/parse.py" cpusummary "$RESULTS/cpu.tsv" | tee "$RESULTS/cpu-summary.md"
fi

# --- fixed rate ---------------------------------------------------------------------------------
sum_ticks() { # NAME:PID...: "utime stime" summed over the processes (0 0 for none)
  local u=0 s=0 entry pu ps
  for entry in "$@"; do
    read -r pu ps <<<"$(ticks "${entry#*:}")"
    u=$((u + pu)); s=$((s + ps))
  done
  echo "$u $s"
}
# run_rate CONFIG RUN: CPU_RATE requests/s for DURATION s; appends a line to rate.tsv.
run_rate() {
  local c=$1 run=$2 raw="$RESULTS/raw/rate-$1-$2.txt" bu bs au as out
  local addr=${URL[$c]#http://}; addr=${addr%%/*}
  read -r bu bs <<<"$(sum_ticks ${PIDS[$c]})"
  out=$(taskset -c 0 "$BIN/bench-load" "$addr" "$CPU_RATE" "$DURATION" "$CPU_RATE_CONNS" "$HOST" /bench)
  read -r au as <<<"$(sum_ticks ${PIDS[$c]})"
  local u=$((au - bu)) s=$((as - bs))
  echo "$out utime=$u stime=$s clk=$CLK load=$(cut -d' ' -f1 /proc/loadavg)" | tee "$raw" >&2
  python3 "$ROOT/bench/parse.py" rate "$raw" "$c" "$run" "${PIDS[$c]:--}" >>"$RESULTS/rate.tsv"
}
if ((CPU_RATE > 0)); then
  RATE_CONFIGS=()
  for c in "${CONFIGS[@]}"; do [[ ${URL[$c]} == http://* ]] && RATE_CONFIGS+=("$c"); done
  for run in $(seq "$RUNS"); do
    for c in $(in_round_order "$run" "${RATE_CONFIGS[@]}"); do run_rate "$c" "$run"; done
  done
  python3 "$ROOT/bench/parse.py" ratesummary "$RESULTS/rate.tsv" | tee "$RESULTS/rate-summary.md"
fi
