#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md in one run: builds the release binaries once, records the
# machine, runs bench_stack, bench_sweep, bench_scale, bench_http and bench_exec one after another, prints
# their tables and keeps everything under target/bench/<UTC time>/.
#
#   bash scripts/bench.sh                  # the full run (~30 min on the 2-core test machine)
#   bash scripts/bench.sh --runs 1 --quick # a smoke run of the script itself (not figures)
#
# Options:
#   --runs N       repetitions of bench_stack, bench_sweep and bench_scale, reps of bench_http
#                  and bench_exec
#                  (default 5; fewer is a smoke run: the binaries say so)
#   --quick        small sizes: bench_scale --sizes 100, bench_http --seconds 2 --clients 1,4
#   --profile P    cargo profile to build (default release; `dev` only to test this script)
#   --only LIST    comma-separated subset of stack,sweep,scale,http,exec
# Needs the test bed (sudo bash scripts/testbed.sh): dockerd, a single-node swarm, fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

runs=5
quick=0
profile=release
only=stack,sweep,scale,http,exec
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --profile) profile="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

target="${CARGO_TARGET_DIR:-target}"
case "$profile" in
    dev) bin="$target/debug" ;;
    *) bin="$target/$profile" ;;
esac
out="$target/bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

echo "== building ($profile) once" >&2
cargo build --profile "$profile" -p hearth-controller --bin hearth \
    -p hearth-tests --bin bench_stack --bin bench_sweep --bin bench_scale --bin bench_http \
    --bin bench_exec

# The machine, and the load before (and after, at the end).
{
    echo "date_start: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
    echo "profile: $profile; runs: $runs; quick: $quick"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "cores: $(nproc)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "docker: $(/usr/bin/docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo unreachable)"
    echo "rustc: $(rustc --version)"
    echo "load_before: $(cat /proc/loadavg)"
} > "$out/machine.txt"
cat "$out/machine.txt"

want() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
run() {
    local name="$1"; shift
    echo "== $name $*" >&2
    local start
    start=$(date +%s)
    # Tables on stdout (kept and shown), progress on stderr (kept).
    local rc=0
    "$bin/$name" "$@" > "$out/$name.txt" 2> "$out/$name.log" || rc=$?
    echo "## $name ($(( $(date +%s) - start )) s, exit $rc): $*"
    cat "$out/$name.txt"
    echo
    if [ "$rc" != 0 ]; then
        tail -5 "$out/$name.log" >&2
    fi
    return "$rc"
}

status=0
if want stack; then run bench_stack --runs "$runs" || status=1; fi
if want sweep; then run bench_sweep --runs "$runs" || status=1; fi
if want scale; then
    if [ "$quick" = 1 ]; then
        run bench_scale --runs "$runs" --sizes 100 || status=1
    else
        run bench_scale --runs "$runs" || status=1
    fi
fi
if want http; then
    if [ "$quick" = 1 ]; then
        run bench_http --reps "$runs" --seconds 2 --clients 1,4 || status=1
    else
        run bench_http --reps "$runs" || status=1
    fi
fi
if want exec; then
    if [ "$quick" = 1 ]; then
        run bench_exec --reps "$runs" --rounds 3 || status=1
    else
        run bench_exec --reps "$runs" || status=1
    fi
fi

{
    echo "load_after: $(cat /proc/loadavg)"
    echo "date_end: $(date -u +%FT%TZ)"
} | tee -a "$out/machine.txt"
echo "raw results: $out" >&2
if [ "$status" != 0 ]; then
    echo "bench.sh: a benchmark failed; see $out/*.log" >&2
fi
exit "$status"
