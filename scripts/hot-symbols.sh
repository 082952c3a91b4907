#!/usr/bin/env bash
# Regenerates crates/cortex/link/hot-symbols.txt: the functions a release `cortex serve` runs while it
# starts, idles and serves chat turns, which the linker places together (crates/cortex/build.rs, docs/
# PERFORMANCE.md section 22). Run it after large changes; a stale list only costs resident memory.
#
# Workload, under callgrind (names kept mangled, as the linker needs them), once on SQLite and once on
# PostgreSQL: `cortex serve` with an HTTPS model (scripts/hot-symbols/model.py, trusted through
# SSL_CERT_FILE with cortex-tls's test CA), ready, idle with `/readyz` and `/healthz` probed; then an
# agent created and five chat turns through the CLI, the agent list, `/metrics`, the dashboard's entry
# page, the job list, and SIGTERM. The list holds what the two starts and idle periods ran first, then
# the rest: an idle server touches one contiguous stretch of code, the requests' code comes after it.
#
# The list names functions as the linker sees them, and a Rust function's name carries a hash of its
# crate's dependency graph: a change to Cargo.lock or to a crate's dependencies renames every function of
# the crates above it, and the list silently stops covering them (one such change took an idle server from
# 18 to 28 MiB). The list's first line records the dependency graph it was made for (crates/cortex/link/
# fingerprint.rs): a release build from another graph warns, and a test fails. `--check` tells how much of
# the list a release binary defines; regenerate below 95 %.
#
# Usage: scripts/hot-symbols.sh [release cortex binary] [PostgreSQL URL of a database it may fill]
#        scripts/hot-symbols.sh --check [release cortex binary]
# Defaults: target/release/cortex, postgres://postgres@127.0.0.1:5432/cortex_hot_symbols (recreated).
set -euo pipefail
cd "$(dirname "$0")/.."
list=crates/cortex/link/hot-symbols.txt
if [ "${1:-}" = "--check" ]; then
  bin="${2:-target/release/cortex}"
  defined="$(comm -12 <(nm --defined-only "$bin" | awk '{print $3}' | sort -u) <(grep -v '^#' $list | sort -u) | wc -l)"
  total="$(grep -v '^#' $list | sort -u | wc -l)"
  echo "$defined of $total listed functions are defined in $bin ($((100 * defined / total)) %)"
  [ $((100 * defined / total)) -ge 95 ] || { echo "stale: run scripts/hot-symbols.sh $bin" >&2; exit 1; }
  exit 0
fi
bin="$(realpath "${1:-target/release/cortex}")"
pg_url="${2:-}"
command -v valgrind >/dev/null || apt-get install -y -q valgrind
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
tls=crates/cortex-tls/tests/data
openssl x509 -inform der -in $tls/trusted.der -out "$work/cert.pem"
openssl pkey -inform der -in $tls/trusted.key.der -out "$work/key.pem"
model_port=$((20000 + RANDOM % 10000))  # below the ephemeral range
python3 scripts/hot-symbols/model.py $model_port "$work/cert.pem" "$work/key.pem" &
if [ -z "$pg_url" ]; then
  psql -q postgres://postgres@127.0.0.1:5432/postgres -c 'DROP DATABASE IF EXISTS cortex_hot_symbols' \
    -c 'CREATE DATABASE cortex_hot_symbols'
  pg_url=postgres://postgres@127.0.0.1:5432/cortex_hot_symbols
fi

# profile NAME [VAR=value ...]: the workload on one store; callgrind parts NAME.1 (start + idle) and NAME.
profile() {
  local name=$1; shift
  env "$@" CORTEX_DATA_DIR="$work/data-$name" OPENAI_BASE_URL=https://localhost:$model_port/v1 \
    OPENAI_API_KEY=sk-hot SSL_CERT_FILE=$tls/ca.pem \
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name" \
    "$bin" serve --listen 127.0.0.1:0 > "$work/$name.log" 2>&1 &
  local server=$! address=""
  until [ -n "$address" ]; do
    kill -0 $server 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
    sleep 0.2
    address="$(sed -n 's/.*"cortex serve ready","address":"\([0-9.:]*\)".*/\1/p' "$work/$name.log")"
  done
  # An idle server is still probed by its orchestrator.
  for _ in 1 2 3; do curl -sf "http://$address/readyz" "http://$address/healthz" > /dev/null; sleep 1; done
  callgrind_control --dump=idle $server > /dev/null
  local url=http://$address key
  key="$(grep -o 'ctx_[A-Za-z0-9_]*' "$work/$name.log" | head -n1)"
  CORTEX_URL=$url CORTEX_API_KEY=$key "$bin" agent create --name "hot-$name" > /dev/null
  for turn in 1 2 3 4 5; do CORTEX_URL=$url CORTEX_API_KEY=$key "$bin" chat "hot-$name" "ping $turn" > /dev/null; done
  curl -sf -H "authorization: Bearer $key" "$url/agents" > /dev/null
  curl -sf -H "authorization: Bearer $key" "$url/jobs?limit=5" > /dev/null
  curl -sf "$url/metrics" > /dev/null
  curl -s "$url/ui/" > /dev/null
  sleep 6
  kill -TERM $server; wait $server || true
}
profile sqlite
profile postgres CORTEX_DATABASE_URL="$pg_url"

python3 - "$bin" $list "$work/sqlite.1" "$work/postgres.1" "$work/sqlite" "$work/postgres" <<'PY'
import glob, re, subprocess, sys
binary, out, *parts = sys.argv[1:]
# The dependency graph the list is made for, as crates/cortex/link/fingerprint.rs computes it.
fingerprint = 0xcbf29ce484222325
for path in ["Cargo.lock", "Cargo.toml"] + sorted(glob.glob("crates/*/Cargo.toml")):
    for byte in path.encode() + b"\0" + open(path, "rb").read() + b"\0":
        fingerprint = ((fingerprint ^ byte) * 0x100000001b3) % (1 << 64)
order, seen = [], set()
for profile in parts:
    for line in open(profile, errors="replace"):
        m = re.match(r"^c?fn=\(\d+\) (.+)$", line.rstrip("\n"))
        if m and m.group(1) not in seen:
            seen.add(m.group(1)); order.append(m.group(1))
defined = set()
for line in subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[1] in "tTwW":
        defined.add(parts[2])
kept = [name for name in order if name in defined]
open(out, "w").write(f"# dependencies: {fingerprint:016x}\n" + "\n".join(kept) + "\n")
print(f"{len(kept)} functions written to {out}")
PY
