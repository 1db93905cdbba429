#!/usr/bin/env bash
# OAuth2 provider benchmark (issue #17): client-credentials access tokens issued per second
# (EdDSA, client_secret_basic) and introspections per second, over HTTP with 16 clients, the
# configured file audit device on, palisade on SQLite; beside them the raw Ed25519 sign and
# verify rates of aws-lc-rs on one thread in the same run. OpenBao has no client-credentials
# grant, so it is not a peer here. Targets: >= 5,000 tokens/s and >= 15,000 introspections/s.
# Usage: bench/oauth.sh [palisade-bench flags, e.g. --seconds 10 --rounds 5]
set -euo pipefail
exec "$(dirname "$0")/run.sh" --backends sqlite --ops oauth-token,oauth-introspect "$@"
