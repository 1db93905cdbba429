#!/usr/bin/env bash
# Reproducible server benchmark: builds dist (fat LTO) binaries, then measures KV v2
# read and write throughput and latency against SQLite and PostgreSQL.
# Usage: bench/run.sh [palisade-bench flags, e.g. --seconds 10 --rounds 5]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile dist -q -p palisade-cli -p palisade-bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
"$target_dir/dist/palisade-bench" kv --palisade "$target_dir/dist/palisade" "$@"
