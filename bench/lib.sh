# Shared helpers of the benchmarks (sourced by bench/run.sh and the bench/*.sh helpers).
# Everything listens on 127.0.0.1 only; every process started here is recorded in $BENCH_PIDS
# and stopped by bench_cleanup (trap it). Temporary configs, pid files and logs live in $BENCH_TMP.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BENCH_BIN:-$ROOT/target/release}"
BENCH_PIDS=()

# Installs the load generators and the baseline proxies if missing (Debian, as root or sudo).
bench_install_tools() {
  [[ -x "$ROOT/scripts/setup.sh" ]] && "$ROOT/scripts/setup.sh" >/dev/null 2>&1 || true
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
  command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
  command -v curl >/dev/null || need+=(curl)
  command -v openssl >/dev/null || need+=(openssl)
  command -v python3 >/dev/null || need+=(python3)
  command -v valgrind >/dev/null || need+=(valgrind)
  if ((${#need[@]})); then
    echo "bench: installing ${need[*]}" >&2
    local sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
    # policy-rc.d keeps Debian from starting the distribution's nginx/haproxy services where one
    # exists (containers); we never use those instances anyway, only our own on high ports.
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  export PATH="$PATH:/usr/sbin:/sbin"
}

bench_build() {
  if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
    (cd "$ROOT" && cargo build --release --workspace --bins --quiet)
  fi
  for b in router tls-edge echo-backend; do
    [[ -x "$BIN/$b" ]] || { echo "bench: missing $BIN/$b" >&2; exit 1; }
  done
}

bench_tmp() {
  BENCH_TMP="$(mktemp -d /tmp/tandem-bench.XXXXXX)"
  export BENCH_TMP
}

bench_cleanup() {
  local p
  # nginx and haproxy run in the foreground too (daemon off / -db), so their pids are here.
  for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${BENCH_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}

# Pingora-based processes started by a script (cpu.sh, tls.sh) go here: SIGINT stops them at
# once (SIGTERM would drain first). Then the usual clean-up.
PINGORA_PIDS=()
bench_cleanup_pingora() {
  local p
  for p in "${PINGORA_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PINGORA_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  bench_cleanup
}

# The http-block lines every nginx baseline shares: no access log, temp files under BENCH_TMP,
# long client keep-alive.
nginx_http_common() {
  cat <<N
  access_log off;
  client_body_temp_path $BENCH_TMP/nginx/body;
  proxy_temp_path $BENCH_TMP/nginx/proxy;
  fastcgi_temp_path $BENCH_TMP/nginx/fastcgi;
  uwsgi_temp_path $BENCH_TMP/nginx/uwsgi;
  scgi_temp_path $BENCH_TMP/nginx/scgi;
  keepalive_requests 1000000;
N
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME LOGFILE CMD...: runs CMD in the background, remembers its pid in PID_<NAME>.
start() {
  local name=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 &
  BENCH_PIDS+=($!)
  printf -v "PID_${name//-/_}" '%s' "$!"
}

# wait_http URL [EXPECTED_SUBSTRING] [CURL ARGS...]: waits (bounded, 20 s) for URL to answer.
wait_http() {
  local url=$1 want=${2:-}; shift 2 || true
  local i out
  for i in $(seq 200); do
    out="$(curl -sS --max-time 1 "$@" "$url" 2>/dev/null || true)"
    if [[ -n "$out" && "$out" == *"$want"* ]]; then return 0; fi
    sleep 0.1
  done
  echo "bench: $url did not answer '$want' within 20 s (last: ${out:0:200})" >&2
  return 1
}

# Manifests: a selector-less Service + v1 Endpoints named NAME pointing at 127.0.0.1:PORT;
# APP_PROTOCOL (optional, e.g. kubernetes.io/h2c) becomes the Service port's appProtocol.
manifest_service() { # NAME PORT [APP_PROTOCOL]
  cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: $2${3:+, appProtocol: $3}}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: $1, namespace: default}
subsets:
  - addresses: [{ip: 127.0.0.1}]
    ports: [{name: http, port: $2}]
---
EOF
}

# A routing Ingress: host-less `/` Prefix (the legacy fallback shape) to service NAME.
manifest_fallback_ingress() { # NAME SERVICE
  cat <<EOF
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: $1, namespace: default}
spec:
  ingressClassName: tandem-router
  rules:
    - http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: $2, port: {number: 80}}}}
---
EOF
}

# An edge Ingress: tls for HOST with secret SECRET, everything to service NAME.
manifest_edge_ingress() { # NAME HOST SECRET SERVICE
  cat <<EOF
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: $1, namespace: default}
spec:
  ingressClassName: tandem-edge
  tls:
    - {hosts: [$2], secretName: $3}
  rules:
    - host: $2
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: $4, port: {number: 80}}}}
---
EOF
}

# Raw PEM out of the Secret manifest written by scripts/make-example-certs.sh.
secret_pem() { # FILE tls.crt|tls.key
  awk -v k="  $2: |" '$0==k{on=1;next} on&&/^    /{sub(/^    /,"");print;next} on{exit}' "$1"
}

# --- load generators ------------------------------------------------------------------------
# Each appends one TSV line to $RESULTS/results.tsv:
#   bench  config  run  tool  req_per_s  p50_ms  p99_ms  errors  raw_file

# run_wrk BENCH CONFIG RUN URL [extra wrk args...]
run_wrk() {
  local bench=$1 config=$2 run=$3 url=$4; shift 4
  local raw="$RESULTS/raw/$bench-$config-$run.wrk.txt"
  echo "+ wrk -t${WRK_THREADS} -c${WRK_CONNS} -d${DURATION}s --latency $* $url" >"$raw"
  wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --timeout 5s --latency "$@" "$url" >>"$raw" 2>&1 || true
  python3 "$ROOT/bench/parse.py" wrk "$raw" "$bench" "$config" "$run" >>"$RESULTS/results.tsv"
  tail -n1 "$RESULTS/results.tsv" | cut -f1-8 >&2
}

# run_h2load BENCH CONFIG RUN URL [extra h2load args...]
run_h2load() {
  local bench=$1 config=$2 run=$3 url=$4; shift 4
  local raw="$RESULTS/raw/$bench-$config-$run.h2load.txt"
  local log="$BENCH_TMP/h2load-req.log"
  rm -f "$log"
  echo "+ h2load -t${WRK_THREADS} -c${H2_CONNS} -m${H2_STREAMS} -D ${DURATION} --warm-up-time=1 $* $url" >"$raw"
  h2load -t"$WRK_THREADS" -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DURATION" --warm-up-time=1 \
    --log-file="$log" "$@" "$url" >>"$raw" 2>&1 || true
  python3 "$ROOT/bench/parse.py" h2load "$raw" "$bench" "$config" "$run" "$log" >>"$RESULTS/results.tsv"
  rm -f "$log"
  tail -n1 "$RESULTS/results.tsv" | cut -f1-8 >&2
}

# in_round_order RUN ITEM...: the items rotated by RUN - 1, one per line, so over the rounds
# every item takes every position once (interleaved rounds: none always runs first or last).
in_round_order() {
  local run=$1 i
  shift
  for ((i = 0; i < $#; i++)); do
    echo "${@:$(((i + run - 1) % $# + 1)):1}"
  done
}

# ticks PID: "utime stime" of the process (all its threads) plus its direct children.
ticks() {
  local u=0 s=0 p line rest
  [[ -r /proc/$1/stat ]] || { echo "bench: process $1 is gone" >&2; return 1; }
  for p in "$1" $(pgrep -P "$1" || true); do
    read -r line <"/proc/$p/stat" || continue
    rest=${line##*) }
    read -ra f <<<"$rest"
    u=$((u + f[11])); s=$((s + f[12]))
  done
  echo "$u $s"
}
