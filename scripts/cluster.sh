#!/usr/bin/env bash
# A real multi-node Docker Swarm on one machine, for hearth's multi-node tests
# (tests/tests/cluster_real.rs; docs/CLUSTER.md says what is tested on it).
#
#   bash scripts/cluster.sh up [N] [--managers M]   N nodes (default 3), M of them managers
#                                                   (default 1: node 1 manages, the others
#                                                   are workers). Prints one line per node:
#                                                   "<hostname> <socket>".
#   bash scripts/cluster.sh down                    remove everything (processes, mounts,
#                                                   namespaces, interfaces, the directory)
#   bash scripts/cluster.sh stop-node N             SIGTERM node N's dockerd, wait until gone
#   bash scripts/cluster.sh start-node N            start it again on the same state
#   bash scripts/cluster.sh partition N             cut node N off the bridge (its link down)
#   bash scripts/cluster.sh heal N                  connect it again
#   bash scripts/cluster.sh status                  one line per node: hostname, socket, state
#
# Each node is a dockerd in its own network namespace (hearth-cl-nodeN) and UTS namespace
# (hostname hearth-nodeN), with its own --data-root, --exec-root (its own containerd),
# --pidfile and socket ($DIR/nodeN.sock, also $DIR/hearth-nodeN.sock). Its eth0 is one end
# of a veth pair whose other end
# is a port of a bridge living in a third namespace (hearth-cl-hub); node N has the address
# 192.168.213.N/24 there. No interface, address, route or iptables rule is created in the
# machine's own namespace, so the machine's dockerd (other tests, people) is never touched:
# every dockerd's bridges, iptables rules, swarm ports and overlay (VXLAN) namespaces live
# inside its node's namespace. Node 1 initialises the swarm; the others join. The fixture
# images are copied from the machine's dockerd (`docker save | docker load`), so run
# scripts/testbed.sh first.
#
# `up` is idempotent: a cluster that is already up with the same shape is repaired if needed
# (stopped nodes started, partitions healed, roles promoted/demoted) and kept; anything else
# is removed and built again. A failed `up` removes what it made. `down` is idempotent and
# verifies that nothing is left (exit 1 naming the residual otherwise). Needs root.
#
# Environment: HEARTH_CLUSTER_DIR (default /run/hearth-cluster; short: unix socket paths are
# limited to 107 bytes).
set -euo pipefail

DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd
FIXTURES=(hearth-fixture/webapp:1.0.0 hearth-fixture/webapp:1.1.0 hearth-fixture/webapp:2.0.0
    hearth-fixture/webapp:2.1.0-broken)
DIR=${HEARTH_CLUSTER_DIR:-/run/hearth-cluster}
DIR=${DIR%/}
HUB=hearth-cl-hub
SUBNET=192.168.213
# The most nodes `down` looks for when the configuration file is gone.
MAX_NODES=9

log() { echo "cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }
usage() {
    echo "usage: $0 up [N] [--managers M] | down | stop-node N | start-node N | partition N | heal N | status" >&2
    exit 2
}

ns_of() { echo "hearth-cl-node$1"; }
host_of() { echo "hearth-node$1"; }
addr_of() { echo "$SUBNET.$1"; }
sock_of() { echo "$DIR/node$1.sock"; }
dir_of() { echo "$DIR/node$1"; }
port_of() { echo "n$1"; } # the hub's end of node N's veth pair
dk() { local n=$1; shift; "$DOCKER" -H "unix://$(sock_of "$n")" "$@"; }

# The shape of the cluster that is up: "NODES MANAGERS" (empty when none).
shape() { cat "$DIR/cluster.conf" 2>/dev/null || true; }
nodes_up() { local s; s=$(shape); echo "${s%% *}"; }

pid_of_dockerd() {
    local n=$1 pid
    pid=$(cat "$(dir_of "$n")/docker.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] \
        && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--exec-root $(dir_of "$n")/exec"; then
        echo "$pid"
    fi
}

# Starts node N's dockerd in its namespaces (returns at once; wait_dockerd waits).
spawn_dockerd() {
    local n=$1 d
    d=$(dir_of "$n")
    mkdir -p "$d/data" "$d/exec"
    rm -f "$(sock_of "$n")"
    # The socket by the node's hostname too: a swarm service mounts its node's own socket
    # with the template $DIR/{{.Node.Hostname}}.sock (deploy/ha/deploy.sh --test-cluster).
    ln -sfn "node$n.sock" "$DIR/$(host_of "$n").sock"
    # setsid: its own session, so a test runner's process-group signals do not reach it.
    # unshare --uts: its own hostname (Swarm names nodes by it; so does --node-endpoint).
    setsid nsenter --net="/run/netns/$(ns_of "$n")" \
        unshare --uts /bin/sh -c 'hostname "$1"; shift; exec "$@"' sh "$(host_of "$n")" \
        env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 "$DOCKERD" \
        --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/docker.pid" \
        -H "unix://$(sock_of "$n")" >>"$d/dockerd.log" 2>&1 </dev/null &
}

wait_dockerd() {
    local n=$1 i
    for i in $(seq 1 120); do
        if dk "$n" version >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.25
    done
    log "node $n: dockerd did not answer within 30 s; last log lines:"
    tail -n 20 "$(dir_of "$n")/dockerd.log" >&2 || true
    return 1
}

stop_dockerd() {
    local n=$1 pid i
    pid=$(pid_of_dockerd "$n")
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    log "node $n: dockerd $pid ignored SIGTERM for 30 s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

# Every process left of node N: its containerd and shims (their command lines name its exec
# root), processes in its network namespace, and its containers' processes (their cgroups
# name the container IDs recorded before the stop).
kill_leftovers() {
    local n=$1 d p id
    d=$(dir_of "$n")
    for p in $(pgrep -f -- "$d/exec/" || true); do
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ -e "/run/netns/$(ns_of "$n")" ]; then
        for p in $(ip netns pids "$(ns_of "$n")" 2>/dev/null || true); do
            kill -KILL "$p" 2>/dev/null || true
        done
    fi
    if [ -s "$d/containers" ]; then
        while read -r id; do
            [ -n "$id" ] || continue
            for p in $(grep -l -- "$id" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3); do
                kill -KILL "$p" 2>/dev/null || true
            done
        done <"$d/containers"
    fi
}

# What is left of a cluster on this machine, one line per residual (empty: nothing).
residuals() {
    local ns p m
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^hearth-cl-' || true); do
        echo "network namespace $ns"
    done
    for p in $(pgrep -f -- "$DIR/node[0-9]+/" || true); do
        echo "process $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-120)"
    done
    mount | awk -v d="$DIR" 'index($3, d "/") == 1 || $3 == d {print "mount " $3}'
    [ ! -e "$DIR" ] || echo "directory $DIR"
    return 0
}

down() {
    local n m last
    last=$(nodes_up)
    [ -n "$last" ] || last=$MAX_NODES
    for n in $(seq 1 "$last"); do
        [ -d "$(dir_of "$n")" ] || [ -e "/run/netns/$(ns_of "$n")" ] || continue
        dk "$n" ps -a -q --no-trunc >"$(dir_of "$n")/containers" 2>/dev/null || true
        stop_dockerd "$n" &
    done
    wait
    for n in $(seq 1 "$last"); do
        kill_leftovers "$n"
    done
    sleep 0.2
    # Deepest mounts first: overlays, container shm, namespace files, data roots.
    mount | awk -v d="$DIR" 'index($3, d "/") == 1 || $3 == d {print $3}' | sort -r \
        | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
    # Deleting a node's namespace deletes its veth pair (both ends) with it.
    for n in $(seq 1 "$last"); do
        [ ! -e "/run/netns/$(ns_of "$n")" ] || ip netns del "$(ns_of "$n")" 2>/dev/null || true
    done
    [ ! -e "/run/netns/$HUB" ] || ip netns del "$HUB" 2>/dev/null || true
    rm -rf "$DIR"
    local left
    left=$(residuals)
    if [ -n "$left" ]; then
        log "down left residuals:"
        echo "$left" >&2
        return 1
    fi
    log "down: nothing left"
}

# The hub (a namespace holding the bridge) and node N's namespace, veth pair and address.
wire_node() {
    local n=$1 ns
    ns=$(ns_of "$n")
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    ip -n "$ns" link set lo up
    if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
        # Made inside the hub: neither end ever exists in the machine's namespace.
        ip -n "$HUB" link add "$(port_of "$n")" type veth peer name eth0 netns "$ns"
        ip -n "$HUB" link set "$(port_of "$n")" master br0
    fi
    ip -n "$HUB" link set "$(port_of "$n")" up
    ip -n "$ns" addr replace "$(addr_of "$n")/24" dev eth0
    ip -n "$ns" link set eth0 up
}

wire_hub() {
    [ -e "/run/netns/$HUB" ] || ip netns add "$HUB"
    ip -n "$HUB" link set lo up
    ip -n "$HUB" link show br0 >/dev/null 2>&1 || ip -n "$HUB" link add br0 type bridge
    ip -n "$HUB" link set br0 up
}

load_fixtures() {
    local n=$1
    dk "$n" load -q -i "$DIR/fixtures.tar" >/dev/null
}

# Whether the cluster up has the shape "N M", every node answering, Ready and Active, with
# the fixture images (after repairing what can be repaired).
healthy() {
    local want_nodes=$1 want_managers=$2 n i ready=0 managers=0
    [ "$(shape)" = "$want_nodes $want_managers" ] || return 1
    for n in $(seq 1 "$want_nodes"); do
        [ -e "/run/netns/$(ns_of "$n")" ] || return 1
        ip -n "$HUB" link set "$(port_of "$n")" up 2>/dev/null || return 1
        if [ -z "$(pid_of_dockerd "$n")" ]; then
            log "node $n: dockerd is not running; starting it"
            spawn_dockerd "$n"
        fi
    done
    for n in $(seq 1 "$want_nodes"); do
        wait_dockerd "$n" || return 1
    done
    # Each node's own view: a node whose swarm state is `error` (e.g. a failed certificate
    # renewal after role changes) can look Ready from the manager yet run nothing.
    for n in $(seq 1 "$want_nodes"); do
        for i in $(seq 1 40); do
            [ "$(dk "$n" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ] && break
            sleep 0.25
        done
        [ "$(dk "$n" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ] || {
            log "node $n: swarm state is not active"
            return 1
        }
    done
    # Roles: node 1..M managers, the rest workers.
    for i in $(seq 1 80); do
        if dk 1 node ls --format '{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}' \
            >"$DIR/nodes.txt" 2>/dev/null; then
            ready=$(awk '$2 == "Ready" && $3 == "Active"' "$DIR/nodes.txt" | wc -l)
            managers=$(awk 'NF >= 4' "$DIR/nodes.txt" | wc -l)
            [ "$ready" -eq "$want_nodes" ] && [ "$managers" -eq "$want_managers" ] \
                && [ "$(wc -l <"$DIR/nodes.txt")" -eq "$want_nodes" ] && break
        fi
        sleep 0.25
    done
    [ "$(wc -l <"$DIR/nodes.txt")" -eq "$want_nodes" ] || return 1
    # A node a test drained (or paused) is made active again.
    if [ "$ready" -ne "$want_nodes" ]; then
        for n in $(awk '$2 == "Ready" && $3 != "Active" {print $1}' "$DIR/nodes.txt"); do
            dk 1 node update --availability active "$n" >/dev/null 2>&1 || return 1
            log "$n: availability set back to active"
        done
        ready=$(dk 1 node ls --format '{{.Status}} {{.Availability}}' | grep -c '^Ready Active$' || true)
    fi
    [ "$ready" -eq "$want_nodes" ] || return 1
    if [ "$managers" -ne "$want_managers" ]; then
        for n in $(seq 2 "$want_nodes"); do
            if [ "$n" -le "$want_managers" ]; then
                dk 1 node promote "$(host_of "$n")" >/dev/null 2>&1 || return 1
            else
                dk 1 node demote "$(host_of "$n")" >/dev/null 2>&1 || return 1
            fi
        done
        log "roles set: nodes 1..$want_managers manage"
    fi
    for n in $(seq 1 "$want_nodes"); do
        for image in "${FIXTURES[@]}"; do
            dk "$n" image inspect "$image" >/dev/null 2>&1 || return 1
        done
    done
    return 0
}

print_nodes() {
    local n
    for n in $(seq 1 "$(nodes_up)"); do
        echo "$(host_of "$n") $(sock_of "$n")"
    done
}

up() {
    local nodes=$1 managers=$2 n
    [ "$nodes" -ge 1 ] && [ "$nodes" -le "$MAX_NODES" ] || die "N must be 1..$MAX_NODES"
    [ "$managers" -ge 1 ] && [ "$managers" -le "$nodes" ] || die "--managers must be 1..N"
    local started=$SECONDS
    if [ -n "$(shape)" ] && healthy "$nodes" "$managers"; then
        log "up: $nodes nodes ($managers managers) already up"
        print_nodes
        return 0
    fi
    if [ -n "$(shape)$(residuals)" ]; then
        log "up: removing the cluster that is there (shape '$(shape)', wanted '$nodes $managers')"
        down
    fi
    trap 'log "up failed; cleaning up"; down || true' ERR
    mkdir -p "$DIR"
    for image in "${FIXTURES[@]}"; do
        "$DOCKER" image inspect "$image" >/dev/null 2>&1 \
            || die "$image is missing on the machine's dockerd: run scripts/testbed.sh first"
    done
    "$DOCKER" save -o "$DIR/fixtures.tar" "${FIXTURES[@]}"
    wire_hub
    for n in $(seq 1 "$nodes"); do
        wire_node "$n"
        spawn_dockerd "$n"
    done
    for n in $(seq 1 "$nodes"); do
        wait_dockerd "$n"
    done
    local pids=()
    for n in $(seq 1 "$nodes"); do
        load_fixtures "$n" &
        pids+=($!)
    done
    for n in "${pids[@]}"; do
        wait "$n"
    done
    dk 1 swarm init --advertise-addr "$(addr_of 1)" --listen-addr "$(addr_of 1):2377" >/dev/null
    local worker_token manager_token
    worker_token=$(dk 1 swarm join-token -q worker)
    manager_token=$(dk 1 swarm join-token -q manager)
    for n in $(seq 2 "$nodes"); do
        local token=$worker_token
        [ "$n" -gt "$managers" ] || token=$manager_token
        dk "$n" swarm join --token "$token" --advertise-addr "$(addr_of "$n")" \
            --listen-addr "$(addr_of "$n"):2377" "$(addr_of 1):2377" >/dev/null
    done
    echo "$nodes $managers" >"$DIR/cluster.conf"
    healthy "$nodes" "$managers" || { log "the cluster did not become healthy"; false; }
    trap - ERR
    log "up: $nodes nodes ($managers managers) in $((SECONDS - started)) s"
    print_nodes
}

need_node() {
    [ -n "${1:-}" ] || usage
    [ -n "$(shape)" ] || die "no cluster is up"
    [ "$1" -ge 1 ] && [ "$1" -le "$(nodes_up)" ] || die "no node $1 (nodes 1..$(nodes_up))"
}

status() {
    local n state
    [ -n "$(shape)" ] || { log "no cluster is up"; return 0; }
    for n in $(seq 1 "$(nodes_up)"); do
        state=$(dk "$n" info --format '{{.Swarm.LocalNodeState}} manager={{.Swarm.ControlAvailable}}' 2>/dev/null) \
            || state=stopped
        if [ "$(ip -n "$HUB" -br link show "$(port_of "$n")" 2>/dev/null | awk '{print $2}')" = DOWN ]; then
            state="$state partitioned"
        fi
        echo "$(host_of "$n") $(sock_of "$n") $state"
    done
}

[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, dockerd)"
[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
    up)
        nodes=3 managers=1
        while [ $# -gt 0 ]; do
            case "$1" in
                --managers) managers=${2:?}; shift 2 ;;
                [0-9]*) nodes=$1; shift ;;
                *) usage ;;
            esac
        done
        up "$nodes" "$managers"
        ;;
    down) down ;;
    stop-node) need_node "${1:-}"; stop_dockerd "$1"; log "node $1 stopped" ;;
    start-node) need_node "${1:-}"; [ -n "$(pid_of_dockerd "$1")" ] || spawn_dockerd "$1"; wait_dockerd "$1"; log "node $1 started" ;;
    partition) need_node "${1:-}"; ip -n "$HUB" link set "$(port_of "$1")" down; log "node $1 partitioned" ;;
    heal) need_node "${1:-}"; ip -n "$HUB" link set "$(port_of "$1")" up; log "node $1 healed" ;;
    status) status ;;
    *) usage ;;
esac
