#!/usr/bin/env bash
# Runs the upstream Kubernetes Ingress conformance suite (kubernetes-sigs/ingress-controller-
# conformance), pinned by commit, against tandem installed on a cluster with charts/tandem.
#
#   KUBECONFIG=~/.kube/config conformance/upstream.sh router        # the router release's class
#   KUBECONFIG=~/.kube/config conformance/upstream.sh edge          # the edge release's class
#   KUBECONFIG=~/.kube/config conformance/upstream.sh edge-router   # requests through the edge
#   conformance/upstream.sh --dry-run router                        # print every command, run none
#
# What the suite needs from the installation (see conformance/README.md):
#   - the release of the tier under test publishes Ingress status (chart default
#     publishService.enabled=true, or publishStatusAddresses) with an address on which the suite
#     can reach port 80 (and 443 for its TLS scenario) from where this script runs;
#   - no catch-all of the class: install without legacyFallback.enabled (its host-less "/" rule
#     would answer the 404 scenarios);
#   - edge-router: the router release installed with publishStatusAddresses = the edge Service's
#     address, so the suite's requests (sent to the status address) go through the edge; this
#     script adds the edge Ingress that forwards everything to the router's Service.
#
# Environment (defaults in brackets):
#   TANDEM_NAMESPACE [ingress]     namespace of the releases
#   ROUTER_RELEASE [tandem-router] EDGE_RELEASE [tandem-edge]   release (= Service) names
#   INGRESS_CLASS                  class to test [tandem-router for router/edge-router, tandem-edge for edge]
#   UPSTREAM_MODE [binary]         binary: build the suite from the pinned commit with Go and run it here;
#                                  sonobuoy: run the pinned suite image in the cluster with sonobuoy
#   WORK_DIR [${TMPDIR:-/tmp}/tandem-conformance-upstream]   checkout, binary and reports
#   WAIT_FOR_STATUS [5m]  TEST_TIMEOUT [20m]
set -euo pipefail

# --- pins -------------------------------------------------------------------------------------
UPSTREAM_REPO=https://github.com/kubernetes-sigs/ingress-controller-conformance
# The last commit of the default branch (2021-04-27, "Generated self signed certs should be TLS
# secrets", PR #88). The suite is pinned by commit, not by a release tag.
UPSTREAM_COMMIT=f91a7996369a1b76e5e058f78da2285026178b59
# The suite's image as documented in the upstream examples/kind/README.md, run by sonobuoy
# v0.18.4 as in examples/kind/.github/workflows/main.yaml.
UPSTREAM_IMAGE=gcr.io/k8s-staging-ingressconformance/ingress-controller-conformance@sha256:33ad42ede4ae8b2f2f205da855bf0af12f78ec1860ca5713af5b82867235c502
SONOBUOY_VERSION=v0.18.4

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

DRY_RUN=0
SETUP=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        router | edge | edge-router) SETUP="$arg" ;;
        -h | --help) usage ;;
        *) echo "upstream.sh: unknown argument '$arg'" >&2; usage ;;
    esac
done
[[ -n "$SETUP" ]] || usage

NS="${TANDEM_NAMESPACE:-ingress}"
ROUTER_RELEASE="${ROUTER_RELEASE:-tandem-router}"
EDGE_RELEASE="${EDGE_RELEASE:-tandem-edge}"
MODE="${UPSTREAM_MODE:-binary}"
WORK_DIR="${WORK_DIR:-${TMPDIR:-/tmp}/tandem-conformance-upstream}"
[[ "$WORK_DIR" == /* ]] || WORK_DIR="$PWD/$WORK_DIR"
WAIT_FOR_STATUS="${WAIT_FOR_STATUS:-5m}"
TEST_TIMEOUT="${TEST_TIMEOUT:-20m}"
case "$SETUP" in
    edge) CLASS="${INGRESS_CLASS:-tandem-edge}"; CONTROLLER=tandem.dev/tls-edge ;;
    *) CLASS="${INGRESS_CLASS:-tandem-router}"; CONTROLLER=tandem.dev/router ;;
esac
REPORTS="$WORK_DIR/reports/$SETUP"

# Print a command (always) and run it (unless --dry-run).
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if ((DRY_RUN == 0)); then
        "$@"
    fi
}

# Like run, with a manifest on stdin (printed in dry-run mode).
run_stdin() {
    local manifest
    manifest="$(cat)"
    if ((DRY_RUN)); then
        printf '+'
        printf ' %q' "$@"
        printf ' <<EOF\n%s\nEOF\n' "$manifest"
    else
        printf '%s\n' "$manifest" | "$@"
    fi
}

die() {
    echo "upstream.sh: $*" >&2
    exit 1
}

# --- pre-flight: the installation the suite expects -------------------------------------------
if ((DRY_RUN == 0)); then
    : "${KUBECONFIG:?point KUBECONFIG at the cluster where tandem is installed}"
    command -v kubectl >/dev/null || die "kubectl is required"
    got="$(kubectl get ingressclass "$CLASS" -o jsonpath='{.spec.controller}')" ||
        die "IngressClass $CLASS not found: install the chart first (charts/tandem/README.md)"
    [[ "$got" == "$CONTROLLER" ]] || die "IngressClass $CLASS names controller '$got', not $CONTROLLER"
    if kubectl -n "$NS" get ingress "$ROUTER_RELEASE-legacy-fallback" >/dev/null 2>&1; then
        die "the router release has legacyFallback enabled: its catch-all answers the suite's 404 scenarios"
    fi
fi
run kubectl get ingressclass "$CLASS" -o 'jsonpath={.spec.controller}'

if [[ "$SETUP" == edge-router ]]; then
    # Everything the edge receives goes to the router's Service (appProtocol kubernetes.io/h2c).
    run_stdin kubectl apply -f - <<EOF
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: conformance-edge-to-router
  namespace: $NS
spec:
  ingressClassName: ${INGRESS_EDGE_CLASS:-tandem-edge}
  defaultBackend:
    service:
      name: $ROUTER_RELEASE
      port:
        name: http
EOF
    trap 'run kubectl -n "$NS" delete ingress conformance-edge-to-router --ignore-not-found' EXIT
    run kubectl -n "$NS" get service "$EDGE_RELEASE" -o 'jsonpath={.spec.externalIPs} {.status.loadBalancer.ingress}'
fi

# --- the suite ------------------------------------------------------------------------------
run mkdir -p "$REPORTS"
case "$MODE" in
    binary)
        if ((DRY_RUN == 0)); then
            command -v go >/dev/null || die "Go is required to build the suite (UPSTREAM_MODE=binary)"
            command -v git >/dev/null || die "git is required"
        fi
        if [[ ! -d "$WORK_DIR/src/.git" ]]; then
            run git clone --quiet "$UPSTREAM_REPO" "$WORK_DIR/src"
        fi
        run git -C "$WORK_DIR/src" checkout --quiet --detach "$UPSTREAM_COMMIT"
        # The upstream Makefile's build (go test -c of the root package), minus its Go version check.
        run env -C "$WORK_DIR/src" CGO_ENABLED=0 go test -c -trimpath "-ldflags=-buildid= -w" \
            -o ingress-controller-conformance .
        # The binary reads features/*.feature relative to its working directory.
        set +e
        run env -C "$WORK_DIR/src" ./ingress-controller-conformance \
            --ingress-class="$CLASS" \
            --wait-time-for-ingress-status="$WAIT_FOR_STATUS" \
            --wait-time-for-ready="$WAIT_FOR_STATUS" \
            --format=cucumber \
            --output-directory="$REPORTS" \
            --no-colors \
            --test.timeout="$TEST_TIMEOUT"
        rc=$?
        set -e
        ;;
    sonobuoy)
        if ((DRY_RUN == 0)); then
            command -v sonobuoy >/dev/null || die "sonobuoy $SONOBUOY_VERSION is required (UPSTREAM_MODE=sonobuoy)"
        fi
        set +e
        run sonobuoy run --skip-preflight --wait \
            --kube-conformance-image="$UPSTREAM_IMAGE" \
            --plugin-env "e2e.INGRESS_CLASS=$CLASS" \
            --plugin-env "e2e.WAIT_FOR_STATUS_TIMEOUT=$WAIT_FOR_STATUS" \
            --plugin-env "e2e.TEST_TIMEOUT=$TEST_TIMEOUT"
        rc=$?
        set -e
        run sonobuoy retrieve "$REPORTS"
        run sonobuoy delete --wait
        ;;
    *) die "UPSTREAM_MODE must be binary or sonobuoy, not '$MODE'" ;;
esac

if ((DRY_RUN == 0)); then
    echo "upstream.sh: suite exit status $rc; cucumber reports under $REPORTS"
    exit "$rc"
fi
