#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 20), starting from
# the committed seeds in fuzz/corpus/<target>/. A crash fails the run and
# leaves its input in fuzz/artifacts/<target>/. Needs the nightly toolchain
# and cargo-fuzz. No sanitizer: the fuzzed crates forbid unsafe code, and
# the targets check properties (canonical forms round-trip, forged tokens
# never verify) as well as panics.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-20}
cargo +nightly fuzz build -s none
for t in $(cargo +nightly fuzz list); do
  echo "== $t (${SECONDS_EACH}s)"
  mkdir -p "corpus/$t"
  cargo +nightly fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 2>&1 | grep -E '^(Done|INFO: seed)|panicked|SUMMARY|ERROR' || true
  [ -z "$(ls -A "artifacts/$t" 2>/dev/null)" ] || { echo "fuzz target $t failed: see fuzz/artifacts/$t"; exit 1; }
done
