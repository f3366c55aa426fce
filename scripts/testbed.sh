#!/usr/bin/env bash
# Test bed for hearth: a local single-node Docker Swarm with fixture images.
#
# Run as root on a fresh Debian 12 machine (or again on a prepared one: every step
# checks before it acts, so a second run takes a second or two). It
#   1. installs what is missing: docker.io, busybox-static, prometheus, chromium,
#      ca-certificates, git, etcd-server, etcd-client, protobuf-compiler (apt-get);
#   2. starts dockerd if it is not running, with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
#      so swarm tasks never try to pull (there is no registry);
#   3. initialises a single-node swarm (--advertise-addr 127.0.0.1) if none is active;
#   4. builds the fixture images with `docker import` (see docs/TESTING.md, "The test bed"),
#      and the fixture recipe git repository (HEARTH_FIXTURE_RECIPE, default
#      /var/lib/hearth-testbed/webapp-recipe);
#   5. removes leftovers of earlier test runs: only objects labelled hearth.test=1.
#
# Environment: HEARTH_DOCKERD_LOG (default /var/log/hearth-dockerd.log),
#              HEARTH_TESTBED_NO_CLEANUP=1 skips step 5.
set -euo pipefail

log() { printf 'testbed: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts dockerd)"

# The Debian client (20.10) matches the engine; /usr/local/bin/docker may be a newer CLI.
DOCKER=/usr/bin/docker
TEST_LABEL=hearth.test=1
FIXTURE_REPO=hearth-fixture/webapp
DOCKERD_LOG=${HEARTH_DOCKERD_LOG:-/var/log/hearth-dockerd.log}

# --- 1. packages -------------------------------------------------------------------------
missing=()
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
# busybox-static ships /bin/busybox statically linked; a dynamic busybox would not run
# inside the scratch-like fixture rootfs.
if ! { [ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1; }; then
    missing+=(busybox-static)
fi
# prometheus + promtool: tests/tests/prometheus_real.rs runs a real Prometheus that scrapes
# hearth (the package's own service is kept from starting by the policy-rc.d below).
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || missing+=(prometheus)
# chromium: tests/tests/status_page.rs renders the status page headless (screenshot + DOM).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# ca-certificates: scripts/image.sh copies Debian's bundle into hearth's image (https git
# remotes); tests/tests/deploy_real.rs builds that image.
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# git: the fixture recipe repository (4b) and hearth's recipe fetches.
command -v git >/dev/null 2>&1 || missing+=(git)
# chromium does not depend on any font: without one the screenshot shows no text.
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# etcd-server + etcd-client: the 3-member etcd cluster of the etcd store engine's tests
# (scripts/etcd.sh; docs/ETCD.md). protobuf-compiler: `protoc`, which the etcd-client crate's
# build script needs to compile etcd's protos — without it hearth does not build.
[ -x /usr/bin/etcd ] || missing+=(etcd-server)
[ -x /usr/bin/etcdctl ] || missing+=(etcd-client)
[ -x /usr/bin/protoc ] || missing+=(protobuf-compiler)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep apt from starting dockerd itself (it would lack our environment); step 2 starts it.
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
    [ "$policy_added" -eq 0 ] || rm -f /usr/sbin/policy-rc.d
fi

# --- 2. dockerd --------------------------------------------------------------------------
docker_up() { "$DOCKER" info >/dev/null 2>&1; }
# The oldest process named dockerd (no procps needed: minimal images lack pgrep).
dockerd_pid() {
    local comm
    for comm in /proc/[0-9]*/comm; do
        if [ "$(cat "$comm" 2>/dev/null)" = dockerd ]; then
            comm=${comm#/proc/}
            echo "${comm%/comm}"
        fi
    done | sort -n | head -n 1
}
if ! docker_up; then
    if [ -n "$(dockerd_pid)" ]; then
        log "dockerd is running but not answering yet; waiting"
    else
        log "starting dockerd (log: $DOCKERD_LOG)"
        DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nohup /usr/sbin/dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    for _ in $(seq 1 120); do
        docker_up && break
        sleep 0.5
    done
    docker_up || die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
fi
pid=$(dockerd_pid)
if [ -n "$pid" ] && ! tr '\0' '\n' <"/proc/$pid/environ" | grep -qx 'DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1'; then
    log "warning: dockerd (pid $pid) runs without DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1;"
    log "warning: swarm tasks will try to pull fixture images before using the local ones"
fi

# --- 3. swarm ----------------------------------------------------------------------------
state=$("$DOCKER" info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" != "active" ]; then
    log "initialising a single-node swarm (state was: ${state:-unknown})"
    "$DOCKER" swarm init --advertise-addr 127.0.0.1 >/dev/null
fi

# --- 4. fixture images -------------------------------------------------------------------
# One web app in several versions. Each image holds:
#   /bin/busybox (+ applet links), /bin/serve (the command services run: busybox httpd on
#   $PORT, default 8080, serving /www), /bin/healthcheck (the command healthchecks run),
#   /www/index.html and /www/version (state the version), /www/healthz.
# 2.1.0-broken serves like the others but its /bin/healthcheck always fails.
SERVE_SCRIPT='#!/bin/sh
# Serve /www on $PORT. Traps TERM so graceful stops are quick; set
# HEARTH_FIXTURE_IGNORE_TERM=1 to behave like a plain PID-1 shell that waits out the
# stop grace period.
port=${PORT:-8080}
/bin/busybox httpd -f -p "$port" -h /www &
child=$!
if [ "${HEARTH_FIXTURE_IGNORE_TERM:-0}" = 1 ]; then
    trap "" TERM
else
    trap "kill $child 2>/dev/null; exit 0" TERM INT
fi
while kill -0 "$child" 2>/dev/null; do wait "$child"; done
'
HEALTHY_CHECK='#!/bin/sh
# (busybox 1.35 static: "wget -T" segfaults; the healthcheck timeout bounds it instead)
exec /bin/busybox wget -q -O /dev/null "http://127.0.0.1:${PORT:-8080}/healthz"
'
BROKEN_CHECK='#!/bin/sh
echo "hearth-fixture: this version is broken on purpose" >&2
exit 1
'
busybox_sum=$(sha256sum /bin/busybox | cut -d' ' -f1)

build_fixture() {
    local tag=$1 healthcheck=$2 version=${1%%-*}
    local image="$FIXTURE_REPO:$tag"
    local hash
    hash=$(printf '%s\n%s\n%s\n%s\n' "$busybox_sum" "$tag" "$SERVE_SCRIPT" "$healthcheck" | sha256sum | cut -d' ' -f1)
    local have
    have=$("$DOCKER" image inspect --format '{{index .Config.Labels "hearth.fixture.hash"}}' "$image" 2>/dev/null || true)
    if [ "$have" = "$hash" ]; then
        return 0
    fi
    log "building $image"
    local root
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/www" "$root/tmp" "$root/etc" "$root/data"
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for applet in sh wget cat echo sleep ls kill httpd; do
        ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    printf '%s' "$SERVE_SCRIPT" >"$root/bin/serve"
    printf '%s' "$healthcheck" >"$root/bin/healthcheck"
    chmod 755 "$root/bin/serve" "$root/bin/healthcheck"
    printf '<html><body><h1>hearth-fixture webapp %s</h1></body></html>\n' "$tag" >"$root/www/index.html"
    printf '%s\n' "$tag" >"$root/www/version"
    printf 'ok\n' >"$root/www/healthz"
    tar -C "$root" -c . | "$DOCKER" import \
        --change "LABEL hearth.fixture.hash=$hash" \
        --change "LABEL hearth.fixture.version=$version" \
        --change 'CMD ["/bin/serve"]' \
        --change 'ENV PATH=/bin' \
        - "$image" >/dev/null
    rm -rf "$root"
}
build_fixture 1.0.0 "$HEALTHY_CHECK"
build_fixture 1.1.0 "$HEALTHY_CHECK"
build_fixture 2.0.0 "$HEALTHY_CHECK"
build_fixture 2.1.0-broken "$BROKEN_CHECK"

# --- 4b. fixture recipe repository ----------------------------------------------------------
# The fixture web app as a Co-op Cloud style recipe in a local git repository, tagged like the
# ecosystem tags (`<recipe semver>+<upstream>`): 1.0.0+1.0.0 and 1.1.0+1.1.0, each commit's
# compose.yml pinning its own image. It has a .env.sample (COMPOSE_FILE accumulated over an
# overlay, a versioned secret with a length modifier), an abra.sh exporting the config's
# version, and a config file. Tests clone it and tag newer versions in their clone
# (tests/tests/recipe_real.rs). Commits carry fixed dates, so a rebuild is identical.
RECIPE_DIR=${HEARTH_FIXTURE_RECIPE:-/var/lib/hearth-testbed/webapp-recipe}
recipe_compose() { # $1: recipe version, $2: image tag
    cat <<YAML
# The fixture web app (scripts/testbed.sh). Imported fixture images need \`command:\`; this
# host has no ip_vs, hence endpoint_mode dnsrr.
version: "3.8"
services:
  app:
    image: hearth-fixture/webapp:$2
    command: ["/bin/serve"]
    environment:
      - PORT
      - APP_DOMAIN=\${DOMAIN}
      - API_KEY_FILE=/run/secrets/api_key
    secrets:
      - api_key
    configs:
      - source: motd
        target: /www/motd.txt
    healthcheck:
      test: ["CMD", "/bin/healthcheck"]
      interval: 2s
      timeout: 2s
      retries: 3
      start_period: 2s
    stop_grace_period: 5s
    deploy:
      endpoint_mode: dnsrr
      replicas: 1
      update_config:
        order: start-first
        failure_action: rollback
        monitor: 10s
      rollback_config:
        order: start-first
      restart_policy:
        condition: any
        delay: 2s
      labels:
        - "coop-cloud.\${STACK_NAME}.version=$1"
        - "coop-cloud.\${STACK_NAME}.timeout=\${TIMEOUT:-60}"
secrets:
  api_key:
    external: true
    name: \${STACK_NAME}_api_key_\${SECRET_API_KEY_VERSION:-v1}
configs:
  motd:
    name: \${STACK_NAME}_motd_\${MOTD_VERSION}
    file: motd.txt
YAML
}
RECIPE_ENV='TYPE=webapp
DOMAIN=webapp.example.com

COMPOSE_FILE="compose.yml"
# the greeting overlay (on by default)
COMPOSE_FILE="$COMPOSE_FILE:compose.greeting.yml"
#COMPOSE_FILE="$COMPOSE_FILE:compose.never.yml"

PORT=8080
GREETING=hello # what the overlay sets

SECRET_API_KEY_VERSION=v1 # length=24
'
RECIPE_OVERLAY='version: "3.8"
services:
  app:
    environment:
      - GREETING=${GREETING:-hi}
'
RECIPE_ABRA='export MOTD_VERSION=v1

# a custom command: abra runs it, hearth only reads the export lines above
greet() {
    echo "hello from $DOMAIN"
}
'
recipe_hash=$(printf '%s\n%s\n%s\n%s\n%s\n' "$(recipe_compose V I)" "$RECIPE_ENV" "$RECIPE_OVERLAY" "$RECIPE_ABRA" "v1" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$RECIPE_DIR.hash" 2>/dev/null)" != "$recipe_hash" ]; then
    log "building the fixture recipe repository $RECIPE_DIR"
    rm -rf "$RECIPE_DIR"
    mkdir -p "$RECIPE_DIR"
    rgit() {
        GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 \
        GIT_AUTHOR_NAME=hearth-testbed GIT_AUTHOR_EMAIL=testbed@hearth.invalid \
        GIT_COMMITTER_NAME=hearth-testbed GIT_COMMITTER_EMAIL=testbed@hearth.invalid \
        git -C "$RECIPE_DIR" "$@"
    }
    rgit init --quiet --initial-branch=main
    printf '%s' "$RECIPE_ENV" >"$RECIPE_DIR/.env.sample"
    printf '%s' "$RECIPE_OVERLAY" >"$RECIPE_DIR/compose.greeting.yml"
    printf '%s' "$RECIPE_ABRA" >"$RECIPE_DIR/abra.sh"
    printf 'hearth fixture recipe\n' >"$RECIPE_DIR/motd.txt"
    day=0
    for version in 1.0.0 1.1.0; do
        day=$((day + 1))
        recipe_compose "$version+$version" "$version" >"$RECIPE_DIR/compose.yml"
        rgit add -A
        GIT_AUTHOR_DATE="2026-01-0${day}T00:00:00Z" GIT_COMMITTER_DATE="2026-01-0${day}T00:00:00Z" \
            rgit commit --quiet -m "chore: publish $version+$version release"
        rgit tag "$version+$version"
    done
    printf '%s\n' "$recipe_hash" >"$RECIPE_DIR.hash"
fi

# --- 5. leftovers of earlier test runs -----------------------------------------------------
if [ "${HEARTH_TESTBED_NO_CLEANUP:-0}" = 1 ]; then
    log "ready (cleanup skipped)"
    exit 0
fi
label_filter=(--filter "label=$TEST_LABEL")
# Services labelled hearth.test=1, and services of test stacks (namespace hearth-test-*) that a
# test deployed with `docker stack deploy` from a file without that label: a killed test run
# cannot run its drop guard, and their labelled networks would stay "in use" below.
mapfile -t services < <({
    "$DOCKER" service ls --format '{{.Name}}' "${label_filter[@]}"
    "$DOCKER" service ls --format '{{.Name}}' --filter label=com.docker.stack.namespace |
        grep '^hearth-test-' || true
} | sort -u)
if [ "${#services[@]}" -gt 0 ]; then
    log "removing ${#services[@]} leftover test service(s)"
    "$DOCKER" service rm "${services[@]}" >/dev/null
    # Wait (bounded) until their containers are gone, so volumes and networks are free.
    for _ in $(seq 1 120); do
        left=0
        for name in "${services[@]}"; do
            if [ -n "$("$DOCKER" ps -aq --filter "label=com.docker.swarm.service.name=$name")" ]; then
                left=1
                break
            fi
        done
        [ "$left" -eq 0 ] && break
        sleep 0.5
    done
    [ "$left" -eq 0 ] || log "warning: containers of removed test services still exist after 60 s"
fi
mapfile -t containers < <("$DOCKER" ps -aq "${label_filter[@]}")
if [ "${#containers[@]}" -gt 0 ]; then
    log "removing ${#containers[@]} leftover test container(s)"
    "$DOCKER" rm -f "${containers[@]}" >/dev/null
fi
# The no-label objects of tests/tests/sweep_foreign_real.rs (the test removes them itself; a
# killed test run leaves them): found by their name only.
bare='^hearth-test-fx[0-9a-f]{6}-bare-'
for kind in service container network volume secret config; do
    case $kind in
        container) ls=(ps -a --format '{{.Names}}') rm=(rm -f) ;;
        *) ls=("$kind" ls --format '{{.Name}}') rm=("$kind" rm) ;;
    esac
    mapfile -t names < <("$DOCKER" "${ls[@]}" | grep -E "$bare" || true)
    if [ "${#names[@]}" -gt 0 ]; then
        log "removing ${#names[@]} leftover unlabelled test ${kind}(s)"
        "$DOCKER" "${rm[@]}" "${names[@]}" >/dev/null 2>&1 || true
    fi
done
# Objects labelled hearth.test=1, and objects of test stacks (namespace label, name
# hearth-test-*): volumes made by tasks carry only the namespace label (#13), and stacks a test
# deployed with `docker stack deploy` carry no hearth.test label.
leftover_test_objects() {
    local kind=$1
    {
        "$DOCKER" "$kind" ls -q "${label_filter[@]}"
        "$DOCKER" "$kind" ls --format '{{.Name}}' --filter label=com.docker.stack.namespace |
            grep '^hearth-test-' || true
    } | sort -u
}
remove_labelled() {
    local kind=$1
    local ids
    mapfile -t ids < <(leftover_test_objects "$kind")
    [ "${#ids[@]}" -gt 0 ] || return 0
    log "removing ${#ids[@]} leftover test ${kind}(s)"
    # A volume or network stays "in use" for a moment after its last container went.
    for _ in $(seq 1 20); do
        "$DOCKER" "$kind" rm "${ids[@]}" >/dev/null 2>&1 || true
        mapfile -t ids < <(leftover_test_objects "$kind")
        [ "${#ids[@]}" -gt 0 ] || return 0
        sleep 0.5
    done
    "$DOCKER" "$kind" rm "${ids[@]}" >/dev/null || die "could not remove test ${kind}(s): ${ids[*]}"
}
remove_labelled network
remove_labelled secret
remove_labelled config
remove_labelled volume
log "ready"
