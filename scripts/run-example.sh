#!/usr/bin/env bash
# The README's main job: bring up the local swarm if needed, build hearth, and run
# `hearth serve` on deploy/examples/ so the example warm apps (hw-webapp, hp-sso) come up.
#
# Run as root (the test bed installs packages and starts dockerd). It
#   1. runs scripts/testbed.sh with HEARTH_TESTBED_NO_CLEANUP=1: dockerd, a single-node
#      swarm and the fixture images; it removes nothing;
#   2. builds the hearth binary (debug profile: no release build needed);
#   3. runs `hearth serve --state deploy/examples/state.yml --catalogue
#      deploy/examples/catalogue` in the foreground (Ctrl-C stops it; the warm apps keep
#      running, as they should — remove them with `hearth stack rm hw-webapp hp-sso`).
#
# In another terminal:  target/debug/hearth get warmapps   and   docker stack ls
# Extra arguments go to `hearth serve` (e.g. --data-dir /tmp/hearth, --listen 127.0.0.1:7434).
# The data directory defaults to /var/lib/hearth for root (see `hearth serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

HEARTH_TESTBED_NO_CLEANUP=1 bash scripts/testbed.sh

echo "run-example: building hearth" >&2
cargo build -q -p hearth-controller --bin hearth
bin="${CARGO_TARGET_DIR:-target}/debug/hearth"

echo "run-example: starting hearth serve (Ctrl-C to stop)." >&2
echo "run-example: in another terminal: $bin get warmapps; docker stack ls" >&2
exec "$bin" serve --state deploy/examples/state.yml --catalogue deploy/examples/catalogue "$@"
