#!/bin/sh
# Lays out the container image's whole file tree in OUT_DIR from two built binaries:
#
#   /usr/local/bin/router, /usr/local/bin/tls-edge   the binaries, debug info stripped
#   /lib64/ld-linux-x86-64.so.2, /lib/x86_64-linux-gnu/<lib>.so.N
#                                                    exactly the shared libraries `ldd` lists
#                                                    (glibc, libm, libgcc_s: as distroless "cc")
#   /etc/passwd, /etc/group                          the nonroot user 65532 (names only; the
#                                                    image runs with a numeric UID anyway)
#   /etc/nsswitch.conf                               hosts: files dns (the kubelet mounts
#                                                    /etc/hosts and /etc/resolv.conf)
#   /tmp                                             empty, mode 1777 (a tmpfs/emptyDir in use)
#
# Used by both ways of building the image (Containerfile's builder stage, and
# scripts/build-image.sh on the host), so both produce the same tree. POSIX sh: runs in the
# Rust builder image and on the host.
#
#   scripts/image-rootfs.sh BIN_DIR OUT_DIR
set -eu

[ $# -eq 2 ] || { echo "usage: $0 BIN_DIR OUT_DIR" >&2; exit 2; }
bin_dir=$1 out=$2
bins="router tls-edge"

for b in $bins; do
    [ -x "$bin_dir/$b" ] || { echo "image-rootfs.sh: $bin_dir/$b not found or not executable" >&2; exit 1; }
done
command -v ldd >/dev/null 2>&1 || { echo "image-rootfs.sh: ldd not found" >&2; exit 1; }
command -v strip >/dev/null 2>&1 || { echo "image-rootfs.sh: strip (binutils) not found" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/tmp"
chmod 1777 "$out/tmp"

for b in $bins; do
    # Symbols stay (readable panics and profiles); DWARF goes (a debug build's is ~250 MB).
    strip --strip-debug -o "$out/usr/local/bin/$b" "$bin_dir/$b"
    chmod 0755 "$out/usr/local/bin/$b"
done

# Every library the dynamic loader will map, at the path ldd names (the loader's own path is
# the one compiled into the binary's PT_INTERP), with symlinks resolved into plain files.
libs=$(for b in $bins; do ldd "$bin_dir/$b"; done | awk '
    $2 == "=>" && $3 ~ /^\// { print $3 }
    $1 ~ /^\// { print $1 }' | sort -u)
[ -n "$libs" ] || { echo "image-rootfs.sh: ldd listed no libraries (static binaries?)" >&2; exit 1; }
for lib in $libs; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
    chmod 0755 "$out$lib"
done
# The result must not need anything else: every binary's libraries resolve inside $out.
for b in $bins; do
    for need in $(ldd "$bin_dir/$b" | awk '$2 == "=>" { print $1 }'); do
        found=$(find "$out/lib" "$out/lib64" -name "$need" 2>/dev/null | head -n 1)
        [ -n "$found" ] || { echo "image-rootfs.sh: $b needs $need, not copied" >&2; exit 1; }
    done
done

printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    >"$out/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$out/etc/group"
printf 'hosts: files dns\n' >"$out/etc/nsswitch.conf"
chmod 0644 "$out/etc/passwd" "$out/etc/group" "$out/etc/nsswitch.conf"
