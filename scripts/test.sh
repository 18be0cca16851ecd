#!/usr/bin/env bash
# Runs every test: formatting and lints, unit tests beside the code, then the end-to-end suites
# that start the real binaries on loopback with real clients and backends.
#
#   scripts/test.sh [extra pytest args]      e.g. scripts/test.sh -k fallback
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --bins --quiet
echo "== unit tests"
cargo test --workspace --quiet 2>&1 | grep -v '^running 0 tests$' | grep -v '^test result: ok. 0 passed' | grep -v '^$'
test "${PIPESTATUS[0]}" -eq 0
echo "== end-to-end tests and Helm chart checks"
export TANDEM_BIN_DIR="$PWD/target/debug"
.venv/bin/python -m pytest tests/e2e tests/chart -q -p no:cacheprovider "$@"
