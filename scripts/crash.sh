#!/usr/bin/env bash
# The full crash-safety run (issue 7, item 2; docs/RELIABILITY.md): the real-swarm workload of
# tests/tests/crash_real.rs with hearth serve SIGKILLed and restarted 25 times (CI runs the same
# test with 5). Usage: bash scripts/crash.sh [KILLS] — HEARTH_CRASH_SEED=N replays a seed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

# The test only looks at its own objects: leave other tests' leftovers (and running tests) alone.
HEARTH_TESTBED_NO_CLEANUP=1 bash scripts/testbed.sh
cargo build -p hearth-controller --bin hearth
export HEARTH_CRASH_KILLS="${1:-25}"
exec cargo nextest run -p hearth-tests --test crash_real --no-capture
