#!/usr/bin/env bash
# Builds tandem's container image offline, from binaries built on this machine: the same final
# stage as `podman build -f Containerfile .` (which compiles inside a Rust builder image), but
# with no base image to pull — the binaries and their libraries are laid out on the host by
# scripts/image-rootfs.sh and copied into a FROM-scratch image (Containerfile, FILES=prebuilt).
#
#   scripts/build-image.sh                      cargo build --release, then the image
#   scripts/build-image.sh --profile debug      cargo build (debug), then the image
#   scripts/build-image.sh --bin-dir DIR        use DIR/router and DIR/tls-edge as they are
#   scripts/build-image.sh --tag NAME           image name (default localhost/tandem:dev)
#
# Needs podman (scripts/setup.sh installs it with runc). Podman reads scripts/containers.conf
# through CONTAINERS_CONF (no global configuration is changed). Run the image like the chart:
#
#   CONTAINERS_CONF=scripts/containers.conf podman run --rm --net=host --read-only \
#     --read-only-tmpfs=false --tmpfs /tmp --user 65532:65532 --cap-drop=ALL \
#     --security-opt no-new-privileges -v "$PWD/examples/ingress:/manifests:ro" \
#     localhost/tandem:dev /usr/local/bin/router --manifests /manifests --http-listen 127.0.0.1:18000
#
# Prints the build time and size; the last line is "image: NAME ID SIZE bytes (N MiB)".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
profile=release
bin_dir=""
tag=localhost/tandem:dev

die() {
    echo "build-image.sh: $*" >&2
    exit 1
}

while (($#)); do
    case "$1" in
    --profile) profile="${2:?--profile needs debug or release}"; shift 2 ;;
    --bin-dir) bin_dir="${2:?--bin-dir needs a directory}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a name}"; shift 2 ;;
    -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ "$profile" == debug || "$profile" == release ]] || die "--profile must be debug or release"
command -v podman >/dev/null 2>&1 || die "podman not found (scripts/setup.sh installs it)"

export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/scripts/containers.conf}"
start=$SECONDS

if [[ -z "$bin_dir" ]]; then
    cargo_args=(build --locked --bin router --bin tls-edge --manifest-path "$ROOT/Cargo.toml")
    [[ "$profile" == release ]] && cargo_args+=(--release)
    echo "== cargo ${cargo_args[*]}"
    cargo "${cargo_args[@]}"
    bin_dir="$ROOT/target/$profile"
fi
compiled=$SECONDS

# The build context holds only the image's file tree: nothing else of the repo is sent.
ctx="$(mktemp -d "${TMPDIR:-/tmp}/tandem-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
sh "$ROOT/scripts/image-rootfs.sh" "$bin_dir" "$ctx/rootfs"

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)"
echo "== podman build $tag from $bin_dir"
log="$ctx/build.log"
if ! podman build --build-arg FILES=prebuilt --build-arg VERSION="${version:-0.0.0}" \
    -f "$ROOT/Containerfile" -t "$tag" "$ctx" >"$log" 2>&1; then
    cat "$log" >&2
    die "podman build failed"
fi
# Drop what earlier builds left: the prebuilt stage's cache images and untagged old images of
# ours (both carry our labels; other images are not touched).
podman image prune -f --filter label=dev.tandem.stage=prebuilt >/dev/null 2>&1 || true
podman image prune -f --filter label=org.opencontainers.image.title=tandem >/dev/null 2>&1 || true

id="$(podman image inspect --format '{{.Id}}' "$tag")"
size="$(podman image inspect --format '{{.Size}}' "$tag")"
echo "image built in $((SECONDS - compiled)) s (binaries: $((compiled - start)) s)"
echo "image: $tag ${id:0:12} $size bytes ($((size / 1024 / 1024)) MiB)"
