#!/usr/bin/env bash
# A second, isolated dockerd with its own single-node swarm, for tests that restart Docker
# (tests/tests/docker_restart_real.rs) without touching the machine's dockerd, which other
# tests and people use.
#
#   bash scripts/dind-netns.sh up DIR       start it; prints the socket path (DIR/docker.sock)
#   bash scripts/dind-netns.sh stop DIR     SIGTERM dockerd and wait until it is gone
#   bash scripts/dind-netns.sh start DIR    start dockerd again on the same state
#   bash scripts/dind-netns.sh restart DIR  stop, then start
#   bash scripts/dind-netns.sh down DIR     stop it and remove everything: processes, mounts,
#                                           the network namespace, DIR
#
# Isolation: dockerd runs in its own network namespace (`ip netns add`, entered with `nsenter
# --net` — not `ip netns exec`, which remounts /sys and hides the cgroup hierarchy dockerd
# needs), with its own --data-root, --exec-root (its own containerd), --pidfile and socket
# under DIR. Its bridges, iptables rules, swarm ports (2377, 7946) and overlay/ingress
# namespaces live inside that namespace. The fixture images are copied from the main dockerd
# (`docker save | docker load`), so run scripts/testbed.sh first. DIR must be absolute and
# short (unix socket paths are limited to 107 bytes). Needs root.
#
# `down` is idempotent and safe to call after a failed or partial `up`; `up` calls it itself
# when it fails.
set -euo pipefail

DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd
FIXTURES=(hearth-fixture/webapp:1.0.0 hearth-fixture/webapp:1.1.0 hearth-fixture/webapp:2.0.0)

usage() { echo "usage: $0 up|stop|start|restart|down DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
case "$dir" in /*) ;; *) echo "dind-netns: DIR must be absolute: $dir" >&2; exit 2 ;; esac
dir=${dir%/}
sock="$dir/docker.sock"
# One namespace per DIR: hearth-dind-<8 hex of the path>.
ns="hearth-dind-$(printf '%s' "$dir" | sha256sum | cut -c1-8)"
dk() { "$DOCKER" -H "unix://$sock" "$@"; }
log() { echo "dind-netns: $*" >&2; }

pid_of_dockerd() {
    local pid
    pid=$(cat "$dir/docker.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--exec-root $dir/exec"; then
        echo "$pid"
    fi
}

start_dockerd() {
    mkdir -p "$dir/data" "$dir/exec"
    rm -f "$sock"
    # setsid: its own session, so a test runner's process-group signals do not reach it.
    setsid nsenter --net="/run/netns/$ns" \
        env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 "$DOCKERD" \
        --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
        -H "unix://$sock" >>"$dir/dockerd.log" 2>&1 </dev/null &
    local i
    for i in $(seq 1 120); do
        if dk version >/dev/null 2>&1; then
            log "dockerd answers on $sock (netns $ns)"
            return 0
        fi
        sleep 0.25
    done
    log "dockerd did not answer within 30 s; last log lines:"
    tail -n 20 "$dir/dockerd.log" >&2 || true
    return 1
}

stop_dockerd() {
    local pid i
    pid=$(pid_of_dockerd)
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || { log "dockerd $pid stopped"; return 0; }
        sleep 0.25
    done
    log "dockerd $pid ignored SIGTERM for 30 s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

# Every process left of this dockerd: its containerd and shims (their command lines name DIR),
# processes inside the namespace, and the processes of its containers (their cgroups name the
# container IDs recorded in DIR/containers before the stop).
kill_leftovers() {
    local p id
    for p in $(pgrep -f -- "$dir/" || true); do
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ -e "/run/netns/$ns" ]; then
        for p in $(ip netns pids "$ns" 2>/dev/null || true); do
            kill -KILL "$p" 2>/dev/null || true
        done
    fi
    if [ -s "$dir/containers" ]; then
        while read -r id; do
            [ -n "$id" ] || continue
            for p in $(grep -l -- "$id" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3); do
                kill -KILL "$p" 2>/dev/null || true
            done
        done <"$dir/containers"
    fi
}

down() {
    [ -d "$dir" ] || [ -e "/run/netns/$ns" ] || return 0
    dk ps -a -q --no-trunc >"$dir/containers" 2>/dev/null || true
    stop_dockerd || true
    kill_leftovers
    sleep 0.2
    # Deepest mounts first: overlays, container shm, namespace files, the data root itself.
    local m
    mount | awk -v d="$dir/" 'index($3, d) == 1 || $3 == substr(d, 1, length(d) - 1) {print $3}' \
        | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    if [ -e "/run/netns/$ns" ]; then
        ip netns del "$ns" 2>/dev/null || true
    fi
    rm -rf "$dir"
    log "removed $dir and netns $ns"
}

up() {
    trap 'log "up failed; cleaning up"; down' ERR
    mkdir -p "$dir"
    if [ ! -e "/run/netns/$ns" ]; then
        ip netns add "$ns"
    fi
    ip netns exec "$ns" ip link set lo up
    start_dockerd
    if ! dk info --format '{{.Swarm.LocalNodeState}}' | grep -q '^active$'; then
        dk swarm init --advertise-addr 127.0.0.1 >/dev/null
    fi
    for image in "${FIXTURES[@]}"; do
        "$DOCKER" save "$image" | dk load -q >/dev/null
    done
    trap - ERR
    echo "$sock"
}

case "$cmd" in
    up) up ;;
    stop) stop_dockerd ;;
    start) start_dockerd ;;
    restart) stop_dockerd; start_dockerd ;;
    down) down ;;
    *) usage ;;
esac
