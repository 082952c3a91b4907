#!/usr/bin/env bash
# Installs the real peers (pinned in test-peers/package-lock.json) the integration tests run against: the
# MCP reference servers (cortex-mcp), telegram-test-api and oidc-provider (dashboard sign-in through OIDC).
# Idempotent: does nothing when node_modules already matches the lock file.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$repo/test-peers"
stamp="$peers/node_modules/.cortex-lock-sha256"

command -v npm >/dev/null || { echo "install-test-peers: npm is required (apt-get install nodejs npm)" >&2; exit 1; }

want="$(sha256sum "$peers/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install-test-peers: test-peers already installed"
  exit 0
fi

npm ci --prefix "$peers" --no-audit --no-fund
echo "$want" > "$stamp"
echo "install-test-peers: installed into $peers/node_modules"
