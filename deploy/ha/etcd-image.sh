#!/usr/bin/env bash
# Builds the etcd image of deploy/ha offline: `docker import` of a root filesystem holding
# Debian's etcd and etcdctl (package etcd-server / etcd-client), exactly the shared libraries
# and loader `ldd` names for them, /etc/passwd with the user etcd (10002) and an empty
# /var/lib/etcd owned by it. No registry, no base image, no Dockerfile.
#
#   bash deploy/ha/etcd-image.sh                  # tags hearth-etcd:<etcd version>; prints it
#   bash deploy/ha/etcd-image.sh --tag NAME:TAG   # another tag
#   bash deploy/ha/etcd-image.sh --label K=V      # a label on the image (repeatable)
#
# The entrypoint is /usr/bin/etcd; `docker run --entrypoint /usr/bin/etcdctl …` runs the
# client (backups: deploy/README.md). Needs: docker (/usr/bin/docker preferred), ldd, tar,
# and etcd-server + etcd-client installed (apt-get install etcd-server etcd-client).
set -euo pipefail

docker=docker
[ -x /usr/bin/docker ] && docker=/usr/bin/docker
etcd=${HEARTH_ETCD_BIN:-/usr/bin/etcd}
etcdctl=${HEARTH_ETCDCTL_BIN:-/usr/bin/etcdctl}
tag="" labels=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --label) labels+=(--change "LABEL $2"); shift 2 ;;
        *) echo "etcd-image.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done
for b in "$etcd" "$etcdctl"; do
    [ -x "$b" ] || { echo "etcd-image.sh: $b is missing: apt-get install etcd-server etcd-client" >&2; exit 1; }
done
# "etcd Version: 3.4.23"
version=$("$etcd" --version | awk '/^etcd Version:/ {print $3}')
[ -n "$version" ] || { echo "etcd-image.sh: cannot read the version of $etcd" >&2; exit 1; }
[ -n "$tag" ] || tag="hearth-etcd:$version"

root=$(mktemp -d)
trap 'rm -rf "$root" "$root.tar"' EXIT
mkdir -p "$root/usr/bin" "$root/etc" "$root/tmp" "$root/var/lib/etcd"
chmod 1777 "$root/tmp"
chmod 0700 "$root/var/lib/etcd"
cp "$etcd" "$root/usr/bin/etcd"
cp "$etcdctl" "$root/usr/bin/etcdctl"
# Exactly what the loader maps for either binary, with their paths, symlinks followed.
while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done < <({ ldd "$etcd"; ldd "$etcdctl"; } | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) { print $i; break } }' | sort -u)
printf 'root:x:0:0:root:/root:/sbin/nologin\netcd:x:10002:10002:etcd:/var/lib/etcd:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\netcd:x:10002:\n' >"$root/etc/group"
# /etc/nsswitch.conf: Go's resolver reads it to decide files-then-DNS for the peers' names.
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"

echo "etcd-image.sh: importing $tag (etcd $version)" >&2
# The data directory belongs to etcd: a fresh named volume mounted there takes its owner.
tar -C "$root" --numeric-owner -c \
    --owner=0 --group=0 --exclude=./var/lib/etcd . >"$root.tar"
tar -C "$root" --numeric-owner --owner=10002 --group=10002 -r -f "$root.tar" ./var/lib/etcd
"$docker" import \
    --change 'ENTRYPOINT ["/usr/bin/etcd"]' \
    --change 'USER 10002:10002' \
    --change 'ENV ETCDCTL_API=3' \
    --change 'EXPOSE 2379 2380' \
    --change "LABEL org.opencontainers.image.version=$version" \
    "${labels[@]}" "$root.tar" "$tag" >/dev/null
echo "etcd-image.sh: $tag: $("$docker" image inspect -f '{{.Size}}' "$tag") bytes" >&2
echo "$tag"
