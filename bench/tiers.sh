#!/usr/bin/env bash
# Benchmark 3: the two tiers. client -(HTTPS)-> front -> router -> echo-backend, where front is
#   edge-http1   tls-edge --upstream-protocol http1 (pooled HTTP/1.1 keep-alive to the router)
#   edge-h2c     tls-edge --upstream-protocol h2c   (multiplexed h2c to the router)
#   nginx-tls    nginx terminating TLS (http2 on), proxy_pass with upstream keepalive (baseline)
# Both tandem tiers run as shipped (JSON access log, request metrics); the router trusts the
# front's forwarded headers. Two clients: wrk (HTTP/1.1 over TLS, keep-alive) and h2load (h2 over
# TLS, several streams per connection). SNI and Host are branded-domain.example.com, resolved to
# 127.0.0.1 by bench/resolve-loopback.lua (wrk) and --connect-to (h2load).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${RUNS:=3}" "${DURATION:=10}" "${WRK_THREADS:=2}" "${WRK_CONNS:=64}" "${BENCH_PORT_BASE:=39000}"
: "${H2_CONNS:=32}" "${H2_STREAMS:=4}"
: "${RESULTS:=$ROOT/bench/results/tiers-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS/raw"
bench_tmp
trap bench_cleanup EXIT
# Ctrl-C or a kill: stop (the EXIT trap cleans up) instead of carrying on against dead processes.
trap 'exit 143' INT TERM

B=$BENCH_PORT_BASE
ECHO=$((B + 2)); ROUTER=$((B + 13)); NGINX=$((B + 43))
declare -A EDGE_PORT=([edge-http1]=$((B + 41)) [edge-h2c]=$((B + 42)))
for p in $ECHO $ROUTER $NGINX "${EDGE_PORT[@]}"; do
  port_free "$p" || { echo "bench: port $p busy (set BENCH_PORT_BASE)" >&2; exit 1; }
done
HOST=branded-domain.example.com

M="$BENCH_TMP/manifests"; mkdir -p "$M" "$BENCH_TMP/certs"
"$ROOT/scripts/make-example-certs.sh" "$BENCH_TMP/certs" >/dev/null
cp "$BENCH_TMP/certs/branded-domain-tls.yaml" "$M/"
secret_pem "$BENCH_TMP/certs/branded-domain-tls.yaml" tls.crt >"$BENCH_TMP/certs/tls.crt"
secret_pem "$BENCH_TMP/certs/branded-domain-tls.yaml" tls.key >"$BENCH_TMP/certs/tls.key"
{
  manifest_service echo "$ECHO"; manifest_fallback_ingress fallback echo
  manifest_service routing-tier "$ROUTER"; manifest_edge_ingress "$HOST" "$HOST" "$HOST" routing-tier
} >"$M/bench.yaml"

start echo "$BENCH_TMP/echo.log" "$BIN/echo-backend" --listen "127.0.0.1:$ECHO" --service echo
start router /dev/null "$BIN/router" --manifests "$M" --http-listen "127.0.0.1:$ROUTER" \
  --admin-listen "127.0.0.1:$((ROUTER + 100))" --trusted-proxies 127.0.0.1/32 --log-format json \
  --shutdown-delay 0s
for c in "${!EDGE_PORT[@]}"; do
  port=${EDGE_PORT[$c]}
  start "$c" /dev/null "$BIN/tls-edge" --manifests "$M" --https-listen "127.0.0.1:$port" \
    --http-listen "127.0.0.1:$((port + 10))" --admin-listen "127.0.0.1:$((port + 100))" \
    --log-format json --shutdown-delay 0s --upstream-protocol "${c#edge-}"
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
  http2_max_requests 1000000;
  upstream router { server 127.0.0.1:$ROUTER; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX ssl http2;
    server_name $HOST;
    ssl_certificate $BENCH_TMP/certs/tls.crt;
    ssl_certificate_key $BENCH_TMP/certs/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;  # 1.22 does not enable TLSv1.3 by default; tls-edge does
    location / {
      proxy_pass http://router;
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

declare -A PORT=([nginx-tls]=$NGINX [edge-http1]=${EDGE_PORT[edge-http1]} [edge-h2c]=${EDGE_PORT[edge-h2c]})
CONFIGS=(edge-http1 edge-h2c nginx-tls)
CA=(--cacert "$BENCH_TMP/certs/example-ca.crt")
for c in "${CONFIGS[@]}"; do
  p=${PORT[$c]}
  wait_http "https://$HOST:$p/bench" '"service":"echo"' --resolve "$HOST:$p:127.0.0.1" "${CA[@]}"
  # The certificate really is the branded one (verified against the example CA), over h2 too.
  curl -fsS --http2 --resolve "$HOST:$p:127.0.0.1" "${CA[@]}" -o /dev/null -w "$c: %{http_version} %{http_code}\n" "https://$HOST:$p/bench" >&2
done

wrk_url() { echo "https://$HOST:${PORT[$1]}/bench"; }
LUA=(-s "$ROOT/bench/resolve-loopback.lua")
for c in "${CONFIGS[@]}"; do
  wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d2s "${LUA[@]}" "$(wrk_url "$c")" >/dev/null 2>&1 || true
done
for run in $(seq "$RUNS"); do
  for c in $(in_round_order "$run" "${CONFIGS[@]}"); do
    run_wrk tiers-wrk "$c" "$run" "$(wrk_url "$c")" "${LUA[@]}"
  done
  for c in $(in_round_order "$run" "${CONFIGS[@]}"); do
    run_h2load tiers-h2load "$c" "$run" "$(wrk_url "$c")" --connect-to="127.0.0.1:${PORT[$c]}"
  done
done
for c in "${!EDGE_PORT[@]}"; do
  curl -s "http://127.0.0.1:$((EDGE_PORT[$c] + 100))/metrics" >"$RESULTS/raw/tiers-$c-metrics.txt" || true
done
curl -s "http://127.0.0.1:$((ROUTER + 100))/metrics" >"$RESULTS/raw/tiers-router-metrics.txt" || true
