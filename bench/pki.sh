#!/usr/bin/env bash
# PKI benchmark (issue #16): leaf certificates issued per second (ec-p256 and ed25519 keys made
# by the server, 16 clients, stored as Vault does), palisade on SQLite and OpenBao on raft side by
# side, rounds interleaved, medians and ratios.
# Usage: bench/pki.sh [palisade-bench flags, e.g. --seconds 10 --rounds 5]
set -euo pipefail
exec "$(dirname "$0")/run.sh" --backends sqlite,openbao --ops issue-ec,issue-ed25519 "$@"
