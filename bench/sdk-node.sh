#!/usr/bin/env bash
# The Node.js SDK's benchmark (issue #18): cached secret reads per second
# beside uncached reads (the SDK's and node-vault's), and what the Express
# middleware adds per request, in one run. See docs/benchmarks.md.
#
#   bench/sdk-node.sh [--seconds 5] [--rounds 3] [--out FILE]
#
# The server: $PALISADE_BIN, else the dist build (cargo build --profile dist),
# else the debug build. It only serves the uncached reads and the token
# setup; the cached reads and the middleware never reach it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if [ -z "${PALISADE_BIN:-}" ]; then
  if [ -x "$target/dist/palisade" ]; then PALISADE_BIN="$target/dist/palisade"; else
    cargo build -q -p palisade-cli --bin palisade
    PALISADE_BIN="$target/debug/palisade"
  fi
fi
export PALISADE_BIN
(cd sdk/node && { [ -d node_modules ] || npm ci --no-audit --no-fund --silent; } && node scripts/build.mjs)
{ [ -d tests/e2e/node-vault/node_modules ] || (cd tests/e2e/node-vault && npm ci --no-audit --no-fund --silent); } || true
echo "# server: $PALISADE_BIN"
exec node sdk/node/bench/bench.mjs "$@"
