#!/usr/bin/env bash
# The whole test suite: installs the third-party test clients the end-to-end
# tests drive (hvac from PyPI, node-vault from npm when its test exists; express
# and jose from npm for the gateway tests), then
# runs every Rust test in the workspace with cargo-nextest (or cargo test), and
# then hvac's own integration test suite against the server (scripts/hvac-suite.sh).
#
# Services: PostgreSQL and Redis are used when reachable (PALISADE_TEST_PG_URL,
# PALISADE_TEST_REDIS_URL); a test that cannot reach them prints SKIPPED,
# unless PALISADE_REQUIRE_SERVICES=1 (as .ci/run sets), which makes it fail.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import hvac' 2>/dev/null; then
  echo "==> installing Python test clients (tests/e2e/requirements.txt)"
  python3 -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt \
    || echo "warning: could not install hvac; its end-to-end test will skip (or fail under PALISADE_REQUIRE_SERVICES=1)"
fi
if [ -f tests/e2e/node-vault/package.json ] && [ ! -d tests/e2e/node-vault/node_modules ] && command -v npm >/dev/null; then
  echo "==> installing Node.js test clients (tests/e2e/node-vault)"
  (cd tests/e2e/node-vault && npm ci --no-audit --no-fund --silent) \
    || echo "warning: could not install node-vault; its end-to-end test will skip (or fail under PALISADE_REQUIRE_SERVICES=1)"
fi
if [ -f tests/e2e/gateway/package.json ] && [ ! -d tests/e2e/gateway/node_modules ] && command -v npm >/dev/null; then
  echo "==> installing Node.js test services (tests/e2e/gateway: express, jose)"
  (cd tests/e2e/gateway && npm ci --no-audit --no-fund --silent) \
    || echo "warning: could not install tests/e2e/gateway; the gateway end-to-end tests will skip (or fail under PALISADE_REQUIRE_SERVICES=1)"
fi

if [ -f tests/e2e/oauth/package.json ] && [ ! -d tests/e2e/oauth/node_modules ] && command -v npm >/dev/null; then
  echo "==> installing Node.js OAuth clients (tests/e2e/oauth: openid-client, jose)"
  (cd tests/e2e/oauth && npm ci --no-audit --no-fund --silent) \
    || echo "warning: could not install tests/e2e/oauth; the OAuth end-to-end test will skip (or fail under PALISADE_REQUIRE_SERVICES=1)"
fi

if [ -f sdk/node/package.json ] && [ ! -d sdk/node/node_modules ] && command -v npm >/dev/null; then
  echo "==> installing the Node.js SDK's build and test dependencies (sdk/node: typescript, express, fastify, pino)"
  (cd sdk/node && npm ci --no-audit --no-fund --silent) \
    || echo "warning: could not install sdk/node; its tests will skip (or fail under PALISADE_REQUIRE_SERVICES=1)"
fi

if [ -f examples/fleet/package.json ] && [ ! -d examples/fleet/node_modules ] && command -v npm >/dev/null; then
  echo "==> installing the example fleet's services (examples/fleet: express, pino, the SDK)"
  (cd examples/fleet && npm ci --no-audit --no-fund --silent) \
    || echo "warning: could not install examples/fleet; its end-to-end test will skip (or fail under PALISADE_REQUIRE_SERVICES=1)"
fi

if [ -f examples/guide/package.json ] && [ ! -d examples/guide/node_modules ] && command -v npm >/dev/null; then
  echo "==> installing the guide's service (examples/guide: express, the SDK)"
  (cd examples/guide && npm ci --no-audit --no-fund --silent) \
    || echo "warning: could not install examples/guide; the guide's test will skip (or fail under PALISADE_REQUIRE_SERVICES=1)"
fi

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi

# hvac's own integration suite (pinned sdist from PyPI) against the debug
# binary, compared with tests/hvac-suite/expected-failures.txt (issue #14);
# skipped when a test filter was given
if [ $# -eq 0 ]; then
  cargo build -q -p palisade-cli --bin palisade
  bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/palisade
  PALISADE_BIN=$bin bash scripts/hvac-suite.sh || status=$?
fi
exit $status
