#!/usr/bin/env bash
# The migration story on this machine, no cluster needed: two echo backends (the "legacy"
# front-end and a migrated component), the routing tier and the TLS edge tier, all fed by the
# manifests in examples/ingress/. Prints curl lines that show routing, the legacy fallback and
# the edge → router → backend chain, runs them once, then keeps everything up until Ctrl-C.
#
#   scripts/demo.sh           run and keep serving
#   scripts/demo.sh --check   run the curl lines, verify the answers, stop (exit 1 on failure)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins --quiet
bin=target/debug
manifests=examples/ingress
logs="$(mktemp -d /tmp/tandem-demo.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

start() { local name=$1; shift; "$@" >"$logs/$name.log" 2>&1 & pids+=($!); }
start legacy  "$bin/echo-backend" --listen 127.0.0.1:18080 --service legacy-fallback --pod legacy-1
start example "$bin/echo-backend" --listen 127.0.0.1:18081 --service example-service --pod example-service-1
start router  "$bin/router" --manifests "$manifests" --http-listen 127.0.0.1:18000 \
  --admin-listen 127.0.0.1:18100 --trusted-proxies 127.0.0.1/32 --log-format text --shutdown-delay 0s
start edge    "$bin/tls-edge" --manifests "$manifests" --https-listen 127.0.0.1:18443 \
  --http-listen 127.0.0.1:18880 --admin-listen 127.0.0.1:18101 --redirect-https-port 18443 \
  --log-format text --shutdown-delay 0s

for admin in 18100 18101; do
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null || { echo "tier on admin port $admin not ready; logs in $logs"; exit 1; }
done

edge=(--resolve branded-domain.example.com:18443:127.0.0.1 --cacert "$manifests/example-ca.crt")
cat <<EOT
tandem demo is up (logs in $logs):
  legacy front-end   echo-backend on 127.0.0.1:18080 (Service legacy-fallback, hand-written Endpoints)
  example-service    echo-backend on 127.0.0.1:18081 (EndpointSlice)
  router             http://127.0.0.1:18000   admin http://127.0.0.1:18100/readyz
  tls-edge           https://127.0.0.1:18443  http://127.0.0.1:18880  admin http://127.0.0.1:18101/readyz

Try:
  # a migrated component: its routing Ingress claims /api/example-service/
  curl -s http://127.0.0.1:18000/api/example-service/orders?id=7
  # everything else falls through to the legacy front-end
  curl -s http://127.0.0.1:18000/shop/cart
  # the full chain: client -> TLS edge (branded certificate) -> router -> component
  curl -s ${edge[*]} https://branded-domain.example.com:18443/api/example-service/orders
  # plain HTTP on the edge is redirected to HTTPS
  curl -si --resolve branded-domain.example.com:18880:127.0.0.1 http://branded-domain.example.com:18880/shop
Migrate another component: add an Ingress file to $manifests (it takes effect within 1 s);
roll back: delete it.
EOT

fail=0
check() { # name, expected substring, curl args...
  local name=$1 want=$2; shift 2
  local got; got="$(curl -sS --max-time 5 "$@" 2>&1 || true)"
  if [[ "$got" == *"$want"* ]]; then echo "ok   $name"; else echo "FAIL $name: wanted '$want', got: $got"; fail=1; fi
}
echo
check "migrated path -> example-service" '"service":"example-service"' http://127.0.0.1:18000/api/example-service/orders?id=7
check "unclaimed path -> legacy fallback" '"service":"legacy-fallback"' http://127.0.0.1:18000/shop/cart
check "edge -> router -> example-service" '"service":"example-service"' "${edge[@]}" https://branded-domain.example.com:18443/api/example-service/orders
check "edge -> router -> legacy, client IP kept" '"x-real-ip":"127.0.0.1"' "${edge[@]}" https://branded-domain.example.com:18443/shop
check "plain HTTP redirected" 'location: https://branded-domain.example.com:18443/shop' -si --resolve branded-domain.example.com:18880:127.0.0.1 http://branded-domain.example.com:18880/shop
if [[ "${1:-}" == "--check" ]]; then exit $fail; fi
echo; echo "Serving until Ctrl-C."
wait
