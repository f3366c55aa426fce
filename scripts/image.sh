#!/usr/bin/env bash
# Builds hearth's image (deploy/Dockerfile) offline: FROM scratch with the binary, the shared
# libraries and loader `ldd` names for it, Debian's CA certificates, /etc/passwd and
# /etc/group for the non-root user hearth (10001), and `hearth healthcheck` as the health
# check. No registry is contacted.
#
#   bash scripts/image.sh                      # release build, tags hearth:<version> and hearth:latest
#   bash scripts/image.sh --bin PATH           # an already built binary (e.g. target/debug/hearth)
#   bash scripts/image.sh --tag NAME:TAG       # only this tag
#   bash scripts/image.sh --label KEY=VALUE    # a label on the image (repeatable; tests: hearth.test=1)
#
# Prints the tag it built on stdout (its last line). Needs: docker (the 20.10 client at
# /usr/bin/docker is preferred), ldd, and /etc/ssl/certs/ca-certificates.crt (apt-get install
# ca-certificates). The binary is stripped in the image when `strip` exists.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

docker=docker
[ -x /usr/bin/docker ] && docker=/usr/bin/docker
bin="" tag="" labels=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --label) labels+=(--label "$2"); shift 2 ;;
        *) echo "image.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done

if [ -z "$bin" ]; then
    echo "image.sh: cargo build --release -p hearth-controller --bin hearth" >&2
    cargo build --release -p hearth-controller --bin hearth >&2
    bin="${CARGO_TARGET_DIR:-target}/release/hearth"
fi
[ -x "$bin" ] || { echo "image.sh: $bin is not an executable" >&2; exit 1; }
certs=/etc/ssl/certs/ca-certificates.crt
[ -f "$certs" ] || { echo "image.sh: $certs is missing: apt-get install ca-certificates" >&2; exit 1; }

# "hearth 0.1.0 (commit abc123def456)"
read -r _ version _ commit < <("$bin" --version)
commit="${commit%)}"
[ -n "$tag" ] || tag="hearth:$version"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/etc/hearth" "$root/tmp" "$ctx/data"
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/local/bin/hearth"
if command -v strip >/dev/null; then strip "$root/usr/local/bin/hearth"; fi

# Exactly what the dynamic loader maps: "libc.so.6 => /lib/…/libc.so.6 (0x…)" and the loader
# "/lib64/ld-linux-x86-64.so.2 (0x…)"; linux-vdso has no file. Copied with their paths,
# symlinks followed.
n=0
while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
    n=$((n + 1))
done < <(ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) { print $i; break } }')
[ "$n" -gt 0 ] || { echo "image.sh: ldd named no library for $bin (a static binary needs none: remove this check)" >&2; exit 1; }

cp -L "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nhearth:x:10001:10001:hearth:/var/lib/hearth:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nhearth:x:10001:\n' >"$root/etc/group"
cp deploy/Dockerfile "$ctx/Dockerfile"

echo "image.sh: building $tag from $bin ($n libraries, commit $commit)" >&2
# The legacy builder (DOCKER_BUILDKIT=0) builds FROM scratch without a registry.
DOCKER_BUILDKIT=0 "$docker" build -q -t "$tag" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$commit" \
    "${labels[@]}" "$ctx" >&2
if [ "$tag" = "hearth:$version" ]; then
    "$docker" tag "$tag" hearth:latest
fi
echo "image.sh: $tag: $("$docker" image inspect -f '{{.Size}}' "$tag") bytes" >&2
echo "$tag"
