#!/usr/bin/env bash
# The long property runs of issue 7 (docs/RELIABILITY.md), one property at a time:
# - the bad-input fuzz targets (item 5): the compose parser/translator, the state-file loader
#   and the API's request bodies, CASES per property (default 40000, about 20 minutes on the
#   2-core test machine in a debug build); HEARTH_FUZZ_CASE_LIMIT_MS sets the per-case deadline
#   (default 5000);
# - the sweeper safety proptest on the simulated swarm (item 6), SWEEP_CASES cases (default
#   20000, a few minutes).
# Usage: bash scripts/fuzz.sh [CASES] [SWEEP_CASES]; 0 skips that part.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

cases="${1:-40000}"
sweep_cases="${2:-20000}"
start=$(date +%s)
if [ "$cases" != 0 ]; then
  # One property at a time: the run length is the sum, and the machine stays usable.
  PROPTEST_CASES="$cases" cargo nextest run -p hearth-controller -p hearth-tests \
    --test-threads 1 --no-capture -E 'test(/::fuzz::/) | binary(fuzz_api)'
  echo "fuzz: PROPTEST_CASES=$cases per property, $(( $(date +%s) - start )) s in all"
fi
if [ "$sweep_cases" != 0 ]; then
  sweep_start=$(date +%s)
  PROPTEST_CASES="$sweep_cases" cargo nextest run -p hearth-controller --no-capture \
    -E 'test(the_sweeper_removes_exactly)'
  echo "sweeper safety: PROPTEST_CASES=$sweep_cases, $(( $(date +%s) - sweep_start )) s"
fi
