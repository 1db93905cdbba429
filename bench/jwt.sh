#!/usr/bin/env bash
# JWT verification cost (issue #17): the gateway's verifier (palisade-jwt, the call its authn step
# makes) on distinct EdDSA access tokens shaped like the OAuth provider's, beside the raw aws-lc-rs
# Ed25519 verification of the same signing inputs, one thread, in one process and one run.
# Target: verifier / raw <= 1.5.
# Usage: bench/jwt.sh [--tokens N --rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile dist -q -p palisade-bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target_dir/dist/palisade-bench" jwt "$@"
