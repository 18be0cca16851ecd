#!/usr/bin/env bash
# Benchmarks 1 and 2: HTTP/1.1 keep-alive throughput and latency of one hop.
#   direct                  wrk -> echo-backend
#   router-default          wrk -> router (JSON access log + request metrics, as shipped) -> echo
#   router-nolog            the same with --no-access-log
#   router-nolog-nometrics  the same with --no-access-log --no-request-metrics
#   nginx                   wrk -> nginx (proxy_pass, upstream keepalive, access_log off) -> echo
#   haproxy                 wrk -> haproxy (mode http, no log) -> echo
# Configurations are interleaved (RUNS rounds, order rotated each round); medians come from
# bench/parse.py summary. Usually driven by bench/run.sh, which sets RESULTS and the knobs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${RUNS:=3}" "${DURATION:=10}" "${WRK_THREADS:=2}" "${WRK_CONNS:=64}" "${BENCH_PORT_BASE:=39000}"
: "${RESULTS:=$ROOT/bench/results/proxy-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS/raw"
bench_tmp
trap bench_cleanup EXIT
# Ctrl-C or a kill: stop (the EXIT trap cleans up) instead of carrying on against dead processes.
trap 'exit 143' INT TERM

B=$BENCH_PORT_BASE
ECHO=$((B + 1)); NGINX=$((B + 20)); HAPROXY=$((B + 30))
declare -A ROUTER_PORT=([router-default]=$((B + 10)) [router-nolog]=$((B + 11)) [router-nolog-nometrics]=$((B + 12)))
declare -A ROUTER_FLAGS=([router-default]="" [router-nolog]="--no-access-log" [router-nolog-nometrics]="--no-access-log --no-request-metrics")
for p in $ECHO $NGINX $HAPROXY "${ROUTER_PORT[@]}"; do
  port_free "$p" || { echo "bench: port $p busy (set BENCH_PORT_BASE)" >&2; exit 1; }
done

# --- backends and proxies ----------------------------------------------------------------------
start echo "$BENCH_TMP/echo.log" "$BIN/echo-backend" --listen "127.0.0.1:$ECHO" --service echo

mkdir -p "$BENCH_TMP/manifests"
{ manifest_service echo "$ECHO"; manifest_fallback_ingress fallback echo; } >"$BENCH_TMP/manifests/router.yaml"
for c in "${!ROUTER_PORT[@]}"; do
  port=${ROUTER_PORT[$c]}
  # The access log goes to /dev/null: formatting and the write(2) are paid, disk is not.
  # shellcheck disable=SC2086
  start "$c" /dev/null "$BIN/router" --manifests "$BENCH_TMP/manifests" --http-listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$((port + 100))" --log-format json --shutdown-delay 0s ${ROUTER_FLAGS[$c]}
done

mkdir -p "$BENCH_TMP/nginx"
cat >"$BENCH_TMP/nginx/nginx.conf" <<NGX
worker_processes 2;
daemon off;
pid $BENCH_TMP/nginx.pid;
error_log $BENCH_TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_http_common)
  upstream echo { server 127.0.0.1:$ECHO; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Real-IP \$remote_addr;
    }
  }
}
NGX
start nginx "$BENCH_TMP/nginx/stderr.log" nginx -p "$BENCH_TMP/nginx" -c "$BENCH_TMP/nginx/nginx.conf" -e "$BENCH_TMP/nginx/error.log"

cat >"$BENCH_TMP/haproxy.cfg" <<HAP
global
  nbthread 2
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:$HAPROXY
  option forwardfor
  default_backend be
backend be
  http-reuse always
  server echo 127.0.0.1:$ECHO
HAP
start haproxy "$BENCH_TMP/haproxy.log" haproxy -db -f "$BENCH_TMP/haproxy.cfg"

declare -A URL=([direct]="http://127.0.0.1:$ECHO/bench" [nginx]="http://127.0.0.1:$NGINX/bench"
  [haproxy]="http://127.0.0.1:$HAPROXY/bench")
for c in "${!ROUTER_PORT[@]}"; do URL[$c]="http://127.0.0.1:${ROUTER_PORT[$c]}/bench"; done
CONFIGS=(direct router-default router-nolog router-nolog-nometrics nginx haproxy)

for c in "${CONFIGS[@]}"; do wait_http "${URL[$c]}" '"service":"echo"'; done
# Warm-up (not recorded): fills the upstream pools and the page cache.
for c in "${CONFIGS[@]}"; do wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d2s "${URL[$c]}" >/dev/null 2>&1 || true; done

for run in $(seq "$RUNS"); do
  for c in $(in_round_order "$run" "${CONFIGS[@]}"); do run_wrk proxy "$c" "$run" "${URL[$c]}"; done
done
# Sanity: the proxies really proxied (their answers name the echo service).
for c in "${CONFIGS[@]}"; do wait_http "${URL[$c]}" '"service":"echo"'; done
curl -s "http://127.0.0.1:$((B + 110))/metrics" >"$RESULTS/raw/proxy-router-default-metrics.txt" || true
