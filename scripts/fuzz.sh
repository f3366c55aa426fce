#!/usr/bin/env bash
# The long bad-input fuzz run (issue 7, item 5; docs/RELIABILITY.md): the proptest fuzz targets
# of the compose parser/translator, the state-file loader and the API's request bodies, with
# many more cases than CI's 256 each. Usage: bash scripts/fuzz.sh [CASES] (default 40000 per
# property, about 20 minutes on the 2-core test machine in a debug build).
# HEARTH_FUZZ_CASE_LIMIT_MS sets the per-case deadline (default 5000).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

export PROPTEST_CASES="${1:-40000}"
start=$(date +%s)
# One property at a time: the run length is the sum, and the machine stays usable.
cargo nextest run -p hearth-controller -p hearth-tests --test-threads 1 --no-capture \
  -E 'test(/::fuzz::/) | binary(fuzz_api)'
echo "fuzz: PROPTEST_CASES=$PROPTEST_CASES per property, $(( $(date +%s) - start )) s in all"
