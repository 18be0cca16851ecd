#!/usr/bin/env bash
# Runs the Kubernetes-API end-to-end tests (tests/e2e/test_api_*.py) against the real cluster
# KUBECONFIG points at, instead of the in-process fake API server. See README.md.
#
#   KUBECONFIG=~/.kube/config tests/real-cluster/run.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${KUBECONFIG:?point KUBECONFIG at a cluster you may create objects in}"
command -v kubectl >/dev/null || { echo "kubectl is required" >&2; exit 2; }
kubectl version >/dev/null   # fails early when the cluster is unreachable

export TANDEM_E2E_REAL_CLUSTER=1
export TANDEM_E2E_NAMESPACE="${TANDEM_E2E_NAMESPACE:-tandem-e2e-$$}"
export TANDEM_BIN_DIR="${TANDEM_BIN_DIR:-$PWD/target/debug}"
kubectl create namespace "$TANDEM_E2E_NAMESPACE"
trap 'kubectl delete namespace "$TANDEM_E2E_NAMESPACE" --wait=false >/dev/null 2>&1 || true' EXIT

# Tests that need the fake's fault injection (API server kill, 410, delayed lists) or its request
# log skip themselves; the measurement test is fake-only by construction.
.venv/bin/python -m pytest tests/e2e/test_api_routes.py tests/e2e/test_api_status.py \
    tests/e2e/test_api_events.py -q -p no:cacheprovider -rs "$@"
