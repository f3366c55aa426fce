#!/usr/bin/env bash
# A 3-member etcd cluster on loopback ports for the etcd store engine's tests and benchmarks
# (docs/ETCD.md). Debian's etcd-server (scripts/testbed.sh installs it).
#
#   bash scripts/etcd.sh up      # starts the members that are not running; waits until healthy
#   bash scripts/etcd.sh down    # stops the members this script started; keeps their data
#   bash scripts/etcd.sh wipe    # down, then removes the data
#   bash scripts/etcd.sh status  # health of each member
#   bash scripts/etcd.sh endpoints  # prints the client URLs, comma-separated
#
# Members m1..m3 listen for clients on 127.0.0.1:23791..23793 and for peers on
# 127.0.0.1:23801..23803. Data and logs live in HEARTH_ETCD_DIR (default /var/tmp/hearth-etcd),
# on disk: etcd fsyncs its WAL, so an acknowledged write survives the member's death.
# `up` is idempotent (under a second when the cluster is already healthy).
set -euo pipefail

log() { printf 'etcd.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

DIR=${HEARTH_ETCD_DIR:-/var/tmp/hearth-etcd}
ETCD=${HEARTH_ETCD_BIN:-/usr/bin/etcd}
ETCDCTL=${HEARTH_ETCDCTL_BIN:-/usr/bin/etcdctl}
MEMBERS=(1 2 3)
client_url() { echo "http://127.0.0.1:$((23790 + $1))"; }
peer_url() { echo "http://127.0.0.1:$((23800 + $1))"; }
endpoints() {
    local m out=()
    for m in "${MEMBERS[@]}"; do out+=("$(client_url "$m")"); done
    (IFS=,; echo "${out[*]}")
}
initial_cluster() {
    local m out=()
    for m in "${MEMBERS[@]}"; do out+=("m$m=$(peer_url "$m")"); done
    (IFS=,; echo "${out[*]}")
}
is_etcd() { [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null || true)" = etcd ]; }
# The member's pid: its pid file, else (a pid file lost or overwritten) the etcd process whose
# command line names the member's data directory.
pid_of() {
    local pid f cmd
    pid=$(cat "$DIR/m$1.pid" 2>/dev/null || true)
    if is_etcd "$pid"; then echo "$pid"; return; fi
    for f in /proc/[0-9]*/cmdline; do
        cmd=$(tr '\0' ' ' <"$f" 2>/dev/null) || continue
        pid=${f#/proc/}; pid=${pid%/cmdline}
        if [[ "$cmd" == *" --data-dir $DIR/m$1 "* ]] && is_etcd "$pid"; then
            echo "$pid"
            return
        fi
    done
}
running() { is_etcd "$(pid_of "$1")"; }
# One up/down/wipe at a time: tests start the cluster from parallel processes, and two `up`s
# racing both started a member, the loser's pid file naming a member that failed to bind
# while the winner ran on unrecorded (seen after a CI run: `down` left two members running).
lock() { mkdir -p "$DIR"; exec 9>"$DIR/.lock"; flock 9; }
healthy() { ETCDCTL_API=3 "$ETCDCTL" --endpoints "$(endpoints)" --command-timeout=2s endpoint health >/dev/null 2>&1; }

up() {
    [ -x "$ETCD" ] || die "$ETCD not found: install Debian's etcd-server (scripts/testbed.sh does)"
    mkdir -p "$DIR"
    local m started=0 state
    for m in "${MEMBERS[@]}"; do
        running "$m" && continue
        # A member with data rejoins its cluster; a fresh one bootstraps it.
        state=new
        [ -d "$DIR/m$m/member" ] && state=existing
        # Election timeouts suited to a shared, loaded 2-core machine: the defaults (100 ms
        # heartbeat, 1 s election) let a compile storm trigger spurious leader changes.
        setsid "$ETCD" --name "m$m" --data-dir "$DIR/m$m" \
            --listen-client-urls "$(client_url "$m")" --advertise-client-urls "$(client_url "$m")" \
            --listen-peer-urls "$(peer_url "$m")" --initial-advertise-peer-urls "$(peer_url "$m")" \
            --initial-cluster "$(initial_cluster)" --initial-cluster-state "$state" \
            --initial-cluster-token hearth-etcd \
            --heartbeat-interval 200 --election-timeout 2000 \
            --max-txn-ops 4096 --auto-compaction-mode revision --auto-compaction-retention 100000 \
            --logger zap --log-outputs "$DIR/m$m.log" \
            </dev/null >>"$DIR/m$m.out" 2>&1 9>&- &
        echo $! >"$DIR/m$m.pid"
        started=$((started + 1))
    done
    local t0=$SECONDS i
    for i in $(seq 1 150); do
        if healthy; then
            [ "$started" -eq 0 ] || log "up: $started member(s) started, healthy after $((SECONDS - t0)) s ($(endpoints))"
            return 0
        fi
        sleep 0.1
    done
    die "the cluster is not healthy after 15 s; see $DIR/m*.log"
}

down() {
    local m pid
    for m in "${MEMBERS[@]}"; do
        # The pid once: an exiting process's command line is empty, so looking it up again
        # would take a member still shutting down for stopped.
        pid=$(pid_of "$m")
        if is_etcd "$pid"; then
            kill "$pid"
            for _ in $(seq 1 50); do is_etcd "$pid" || break; sleep 0.1; done
            is_etcd "$pid" && kill -9 "$pid"
        fi
        rm -f "$DIR/m$m.pid"
    done
}

case "${1:-}" in
    up) lock; up ;;
    down) lock; down ;;
    wipe) lock; down; rm -rf "$DIR" ;;
    status) ETCDCTL_API=3 "$ETCDCTL" --endpoints "$(endpoints)" endpoint status -w table ;;
    endpoints) endpoints ;;
    *) die "usage: $0 up|down|wipe|status|endpoints" ;;
esac
