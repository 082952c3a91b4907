#!/usr/bin/env bash
# Instruction counts of one chat turn and one no-op job (issue 17), from valgrind's callgrind: CPU cost
# that repeats (nearly) exactly from run to run, unlike wall-clock figures on a shared machine.
#
# Each figure runs a workload at two sizes under callgrind and divides the difference in instructions by
# the difference in size, so process start-up, migrations and warm-up cancel out:
#   - chat turn: `instructions_chat_turns` (cortex-runtime tests): the API's creation transaction, then the
#     engine stepped by hand (`JobEngine::run_one`: claim, agent loop against an instant model, completion),
#     on SQLite with a manual clock — no background loop, no timer.
#   - no-op job: `instructions_noop_jobs` (cortex-jobs tests): enqueue (one transaction), claim, run, complete.
#   - with --http, also `cortex bench chat --turns N`: a chat turn through the HTTP API (POST …/chat?wait=true),
#     engine loops and all; less repeatable (its idle loops poll on the wall clock).
# Only this process's instructions are counted: with PostgreSQL the server's share would be missing, so
# every figure is on SQLite (in-process).
#
# Usage: scripts/instructions.sh [--release] [--http] [--small N] [--large N]
# The default build is the debug profile (the shared machine's rule); figures of the two profiles are not
# comparable. Installs valgrind with apt-get when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=()
http=0
small=5
large=25
while [ $# -gt 0 ]; do
    case "$1" in
        --release) profile=(--release) ;;
        --http) http=1 ;;
        --small) small="$2"; shift ;;
        --large) large="$2"; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$large" -le "$small" ]; then
    echo "--large must be more than --small" >&2
    exit 2
fi

if ! command -v valgrind >/dev/null; then
    echo "installing valgrind" >&2
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq valgrind; else sudo apt-get update -qq && sudo apt-get install -y -qq valgrind; fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Builds the `it` test binary of a crate and prints its path.
test_binary() {
    nice -n 19 cargo test "${profile[@]}" -p "$1" --test it --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "it" and message.get("executable"):
        print(message["executable"])
'
}

# Instructions of one command run under callgrind (all threads together).
instructions() {
    local out="$work/callgrind.$RANDOM"
    if ! nice -n 19 valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$work/log" 2>&1; then
        cat "$work/log" >&2
        echo "failed under callgrind: $*" >&2
        exit 1
    fi
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

# Prints the per-unit figure of a workload measured at --small and --large.
per_unit() {
    local label="$1" unit="$2"
    shift 2
    local at_small at_large
    at_small=$(CORTEX_INSTRUCTION_ROUNDS=$small instructions "$@")
    at_large=$(CORTEX_INSTRUCTION_ROUNDS=$large instructions "$@")
    python3 -c "
small, large, n_small, n_large = $at_small, $at_large, $small, $large
print(f'$label: {(large - small) / (n_large - n_small):,.0f} instructions per $unit '
      f'({n_small} → {small:,}, {n_large} → {large:,})')"
}

runtime_it=$(test_binary cortex-runtime)
jobs_it=$(test_binary cortex-jobs)
[ -n "$runtime_it" ] && [ -n "$jobs_it" ] || { echo "test binaries not built" >&2; exit 1; }
echo "profile: ${profile[*]:-debug}; sizes $small and $large; valgrind $(valgrind --version)"
per_unit "chat turn (stepped engine, SQLite)" "turn" \
    "$runtime_it" --ignored --exact turncost::instructions_chat_turns --test-threads=1
per_unit "no-op job (stepped engine, SQLite)" "job" \
    "$jobs_it" --ignored --exact steps::instructions_noop_jobs --test-threads=1

if [ "$http" -eq 1 ]; then
    nice -n 19 cargo build "${profile[@]}" -p cortex --bin cortex 2>/dev/null
    dir=debug
    [ "${#profile[@]}" -gt 0 ] && dir=release
    cortex="${CARGO_TARGET_DIR:-target}/$dir/cortex"
    at_small=$(instructions "$cortex" bench chat --turns "$small")
    at_large=$(instructions "$cortex" bench chat --turns "$large")
    python3 -c "
small, large, n_small, n_large = $at_small, $at_large, $small, $large
print(f'chat turn through HTTP (cortex bench chat): {(large - small) / (n_large - n_small):,.0f} instructions per turn '
      f'({n_small} → {small:,}, {n_large} → {large:,})')"
fi
