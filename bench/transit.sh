#!/usr/bin/env bash
# Transit benchmark (issue #16): encrypt and decrypt operations/s for 1 KiB plaintexts (16
# clients) beside the same server's KV v2 read rate, and single-request throughput for 1 MiB
# plaintexts (one client) beside aws-lc-rs AES-256-GCM measured in the same run; palisade on
# SQLite and OpenBao on raft side by side, rounds interleaved, medians and ratios.
# Usage: bench/transit.sh [palisade-bench flags, e.g. --seconds 10 --rounds 5]
set -euo pipefail
exec "$(dirname "$0")/run.sh" --backends sqlite,openbao \
    --ops read,encrypt-1k,decrypt-1k,encrypt-1m,decrypt-1m "$@"
