#!/usr/bin/env bash
# hearth's test command (README: "Run the tests"): prepare the test bed, then run every
# test in the workspace with a line per test. Real-swarm tests need the test bed; under
# CI=true they fail when Docker cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

bash scripts/testbed.sh
# The 3-node cluster of the multi-node tests (tests/tests/cluster_real.rs; docs/CLUSTER.md):
# a few seconds the first time, under one when it is already up. The tests bring it up
# themselves too and fail under CI=true when they cannot, so a failure here is not fatal.
bash scripts/cluster.sh up 3 >/dev/null || echo "test.sh: scripts/cluster.sh up 3 failed; the multi-node tests will say why" >&2

# The 3-member etcd cluster of the etcd store engine's conformance cases (scripts/etcd.sh;
# under a second when up). The cases start it themselves too and fail under CI=true without it.
bash scripts/etcd.sh up || echo "test.sh: scripts/etcd.sh up failed; the etcd conformance cases will say why" >&2

# Real-swarm CLI tests spawn the `hearth` binary; nextest builds only the tests' own package's
# bins, so build it first (a fresh target dir has none).
cargo build -p hearth-controller --bin hearth

if cargo nextest --version >/dev/null 2>&1; then
    # One line per test (PASS/FAIL/SKIP with its duration), failures summarised at the end.
    exec cargo nextest run --workspace --no-fail-fast --status-level all --final-status-level fail "$@"
else
    echo "test.sh: cargo-nextest not found; falling back to cargo test" >&2
    exec cargo test --workspace --no-fail-fast "$@"
fi
