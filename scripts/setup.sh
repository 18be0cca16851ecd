#!/usr/bin/env bash
# Prepare a fresh Debian machine (Rust toolchain + python3 already present) to build and
# test tandem:
#   - system tools via apt-get, only those missing: cmake (+ make, pingora's zlib-ng build),
#     curl, openssl, wrk, nghttp2-client (nghttp, h2load); python3-venv if venv can't bootstrap pip
#   - rustup components clippy and rustfmt, if missing
#   - a Python venv at <repo>/.venv with pytest, websockets and pyyaml
# Idempotent and quiet: re-runs touch nothing (no apt-get update, no pip) when everything is
# already there, and print one summary line. On failure the failing command's output is shown.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY_PACKAGES=(pytest websockets pyyaml)
PY_IMPORTS="import pytest, websockets, yaml"

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
NEED=(cmake:cmake make:make curl:curl openssl:openssl wrk:wrk nghttp:nghttp2-client h2load:nghttp2-client)
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

printf -v line '%s; ' "${summary[@]}"
echo "setup.sh: ok (${line%; })"
