#!/usr/bin/env bash
# Makes the services the test suite talks to available: PostgreSQL, the npm MCP servers and Chromium
# (the dashboard's browser tests drive Debian's `chromium` headless).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pg_url="${CORTEX_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if [ "${CORTEX_TEST_SKIP_PG:-0}" != "1" ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
      echo "==> starting PostgreSQL"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    fi
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && break
    sleep 0.5
  done
  pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable at $pg_url (set CORTEX_TEST_SKIP_PG=1 to skip its tests)" >&2; exit 1; }
  # Test databases of interrupted runs are removed; each test creates its own. Only old ones: the server
  # may be shared with other runs whose tests are using theirs right now (dropping those made their tests
  # fail or time out), and no test lasts hours. A name carries its creation time: `cortex_test_<UUIDv7>`,
  # whose first 12 hex digits are unix milliseconds.
  now_ms=$(( $(date +%s) * 1000 ))
  psql "$pg_url" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'cortex_test_%'" 2>/dev/null |
    while read -r db; do
      id="${db#cortex_test_}"
      [[ "$id" =~ ^[0-9a-f]{32}$ ]] || continue
      created_ms=$(( 16#${id:0:12} ))
      if (( now_ms - created_ms > 3 * 3600 * 1000 )); then
        psql "$pg_url" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
      fi
    done
fi

if [ "${CORTEX_TEST_SKIP_BROWSER:-0}" != "1" ] && [ -z "${CORTEX_TEST_CHROMIUM:-}" ] \
   && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  echo "==> installing chromium (dashboard browser tests; CORTEX_TEST_SKIP_BROWSER=1 skips them)"
  if command -v apt-get >/dev/null && [ "$(id -u)" = "0" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null; }
  else
    echo "chromium is missing and cannot be installed here (needs apt-get as root); set CORTEX_TEST_SKIP_BROWSER=1 to skip" >&2
    exit 1
  fi
fi

scripts/install-test-peers.sh
