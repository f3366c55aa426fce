#!/usr/bin/env bash
# Deploys hearth with high availability (deploy/ha/stack.yml: etcd×3 and hearth×3, one of each
# per manager) in one command, and waits until a replica leads. See deploy/README.md, "High
# availability".
#
#   bash deploy/ha/deploy.sh [options]
#
#   --bin PATH          the hearth binary to put in the image (default: a release build,
#                       scripts/image.sh)
#   --load-into HOST    a Docker host (unix:///…, ssh://user@manager, tcp://…) that gets both
#                       images with `docker save | docker load`: every manager but the one
#                       deployed from, when there is no registry (repeatable)
#   --test-cluster      the 3-manager test cluster of scripts/cluster.sh (`up 3 --managers 3`):
#                       deploys through node 1, loads the images into nodes 2 and 3, and
#                       merges deploy/ha/test-cluster.yml (each node's own socket)
#   --compose FILE      a compose file merged over deploy/ha/stack.yml (TLS for etcd,
#                       deploy/README.md; repeatable)
#   --stack NAME        the stack's name                                          [hearth]
#   --token-file FILE   creates the API token secret from FILE when it does not exist
#   --state FILE        the operator state file                  [deploy/examples/state.yml]
#   --label KEY=VALUE   label of the stack's objects, its images and what hearth deploys
#                                                                        [hearth.deployment=ha]
#   --timeout SECONDS   how long to wait for a leader                             [180]
#
# Deploys through $DOCKER_HOST (default: this host's engine), which must be a manager. Every
# HEARTH_* variable of deploy/ha/stack.yml set in the environment is passed on. Prints the
# image tags, then the leader's log line. Idempotent: deploying again with the same binary
# changes nothing; with another binary, the replicas are updated one at a time.
set -euo pipefail
cd "$(dirname "$0")/../.."

docker=docker
[ -x /usr/bin/docker ] && docker=/usr/bin/docker
bin="" stack=hearth token_file="" label=hearth.deployment=ha timeout=180 test_cluster=0
state=deploy/examples/state.yml
load_into=()
compose=(-c deploy/ha/stack.yml)
log() { echo "deploy-ha: $*" >&2; }
die() { log "error: $*"; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --load-into) load_into+=("$2"); shift 2 ;;
        --test-cluster) test_cluster=1; shift ;;
        --compose) compose+=(-c "$2"); shift 2 ;;
        --stack) stack="$2"; shift 2 ;;
        --token-file) token_file="$2"; shift 2 ;;
        --state) state="$2"; shift 2 ;;
        --label) label="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        *) die "unknown argument $1 (see the header of this script)" ;;
    esac
done

if [ "$test_cluster" = 1 ]; then
    dir=${HEARTH_CLUSTER_DIR:-/run/hearth-cluster}
    [ "$(cat "$dir/cluster.conf" 2>/dev/null)" = "3 3" ] \
        || die "the test cluster is not up with 3 managers: bash scripts/cluster.sh up 3 --managers 3"
    export DOCKER_HOST="unix://$dir/node1.sock"
    load_into+=("unix://$dir/node2.sock" "unix://$dir/node3.sock")
    # Each replica mounts the socket of the node it runs on (a swarm template;
    # scripts/cluster.sh links hearth-nodeN.sock to nodeN.sock), and every node's.
    export HEARTH_DOCKER_SOCKET="$dir/{{.Node.Hostname}}.sock"
    compose+=(-c deploy/ha/test-cluster.yml)
fi
dk() { "$docker" "$@"; }

[ "$(dk info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" = true ] \
    || die "${DOCKER_HOST:-the local engine} is not a swarm manager"
if [ -z "${HEARTH_DOCKER_GID:-}" ]; then
    socket=${DOCKER_HOST:-unix:///var/run/docker.sock}
    case "$socket" in
        unix://*) HEARTH_DOCKER_GID=$(stat -c %g "${socket#unix://}") ;;
        *) die "set HEARTH_DOCKER_GID to the group id of the Docker socket on the managers" ;;
    esac
    export HEARTH_DOCKER_GID
fi

# 1. The images, built on the manager's engine, offline.
image_args=(--label "$label")
[ -z "$bin" ] || image_args+=(--bin "$bin")
# A tag per content: a changed binary is a changed service spec (an update), the same one is not.
built=$(bash scripts/image.sh "${image_args[@]}" --tag hearth:ha-build)
id=$(dk image inspect -f '{{.Id}}' "$built")
hearth_image="hearth:ha-${id#sha256:}"
hearth_image=${hearth_image:0:22}
dk tag "$built" "$hearth_image"
dk rmi "$built" >/dev/null
etcd_image=${HEARTH_ETCD_IMAGE:-$(bash deploy/ha/etcd-image.sh --label "$label")}
log "images: $hearth_image $etcd_image"
for host in "${load_into[@]}"; do
    dk save "$hearth_image" "$etcd_image" | "$docker" -H "$host" load -q >/dev/null
    log "images loaded into $host"
done

# 2. One etcd member per manager: the node labels hearth-etcd=1..3.
mapfile -t managers < <(dk node ls --filter role=manager --format '{{.Hostname}}' | sort)
[ "${#managers[@]}" -ge 3 ] || die "the swarm has ${#managers[@]} manager(s); etcd×3 and hearth×3 need 3"
for member in 1 2 3; do
    holder=$(dk node ls -q --filter "node.label=hearth-etcd=$member")
    [ -z "$holder" ] || continue
    for m in "${managers[@]}"; do
        if [ -z "$(dk node inspect -f '{{index .Spec.Labels "hearth-etcd"}}' "$m")" ]; then
            dk node update --label-add "hearth-etcd=$member" "$m" >/dev/null
            log "etcd member $member on $m (node label hearth-etcd=$member)"
            break
        fi
    done
done

# 3. The token secret.
secret=${HEARTH_TOKEN_SECRET:-hearth-token}
if ! dk secret inspect "$secret" >/dev/null 2>&1; then
    [ -n "$token_file" ] || die "no secret $secret: give --token-file FILE, or docker secret create $secret FILE"
    dk secret create --label "$label" "$secret" "$token_file" >/dev/null
    log "secret $secret created from $token_file"
fi

# 4. The stack.
export HEARTH_IMAGE="$hearth_image" HEARTH_ETCD_IMAGE="$etcd_image" HEARTH_LABEL="$label"
export HEARTH_STATE_FILE="${HEARTH_STATE_FILE:-$(realpath "$state")}"
export HEARTH_CATALOGUE="${HEARTH_CATALOGUE:-$(realpath deploy/examples/catalogue)}"
dk stack deploy --prune "${compose[@]}" "$stack" >&2
log "deployed stack $stack; waiting for a leader (up to ${timeout} s)"
started=$SECONDS
while [ $((SECONDS - started)) -lt "$timeout" ]; do
    # Each replica's own log on its node (`docker service logs` can hang on removed tasks).
    logs=""
    for host in "${DOCKER_HOST:-unix:///var/run/docker.sock}" "${load_into[@]}"; do
        for c in $("$docker" -H "$host" ps -q --filter "label=com.docker.swarm.service.name=${stack}_hearth" 2>/dev/null); do
            logs+=$("$docker" -H "$host" logs "$c" 2>&1 || true)
        done
    done
    if grep -q 'this replica leads' <<<"$logs"; then
        log "a replica leads after $((SECONDS - started)) s"
        echo "$hearth_image"
        echo "$etcd_image"
        exit 0
    fi
    sleep 1
done
dk service ps --no-trunc "${stack}_etcd1" "${stack}_etcd2" "${stack}_etcd3" "${stack}_hearth" >&2 || true
die "no replica leads after $timeout s"
