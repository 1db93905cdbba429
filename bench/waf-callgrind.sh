#!/usr/bin/env bash
# Instructions per CRS evaluation under valgrind's callgrind, for one of the
# requests `palisade-bench waf` measures (noise-free, unlike wall-clock time
# on a shared 2-vCPU machine): only Transaction::process_request is counted,
# and the figure is (total(N2) - total(N1)) / (N2 - N1), so the rule set's
# load and the warm-up cancel out. Prints the per-function breakdown of the
# second run with PROFILE=1.
# Needs: valgrind. Usage: bench/waf-callgrind.sh ["JSON order"] [paranoia]
set -eu
cd "$(dirname "$0")/.."
ONLY=${1:-GET}
PL=${2:-1}
N1=${N1:-20}
N2=${N2:-120}
cargo build --release -q -p palisade-bench
T=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
total() {
  valgrind --tool=callgrind --toggle-collect='*Transaction*process_request*' \
    --callgrind-out-file="$DIR/cg.$1" "$T/release/palisade-bench" waf \
    --iterations "$1" --paranoia "$PL" --only "$ONLY" >/dev/null 2>&1
  callgrind_annotate "$DIR/cg.$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'
}
a=$(total "$N1")
b=$(total "$N2")
echo "PL$PL \"$ONLY\": $(( (b - a) / (N2 - N1) )) instructions per request"
if [ "${PROFILE:-0}" = 1 ]; then
  callgrind_annotate --inclusive=yes "$DIR/cg.$N2" 2>/dev/null |
    grep -E 'palisade_waf|libinjectionrs::detect|regex_automata::meta::strategy::Core|malloc.c:(malloc|free) ' | head -25
fi
