#!/usr/bin/env bash
# Instructions per gateway request under valgrind's callgrind: the benchmark's
# setup (bench/gateway.sh: TLS + ES256 JWT + Cedar + rate limits, nginx static
# upstream), one keep-alive TLS connection from Python's http.client sending
# N1 and then (in a fresh gateway) N2 sequential requests; prints
# (total(N2) - total(N1)) / (N2 - N1). Repeat runs of one binary differ by
# ~3 % (timer and wake-up paths depend on timing even under valgrind).
# Needs: valgrind, nginx, python3. Usage: [BIN=path/to/palisade] bench/callgrind.sh
set -eu
cd "$(dirname "$0")/.."
N1=${N1:-200}
N2=${N2:-1200}
cargo build --profile dist -q -p palisade-cli -p palisade-bench
T=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=${BIN:-$T/dist/palisade}
DIR=$(mktemp -d); chmod 755 "$DIR"
"$T/dist/palisade-bench" gateway-setup "$DIR" --ports 18081,18444,18445,19902 >/dev/null
TOKEN=$(cat "$DIR/token.txt")
nginx -c "$DIR/upstream.conf" & NGINX=$!
trap 'kill $NGINX 2>/dev/null || true; rm -rf "$DIR"' EXIT
run() {
  valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.$1" "$BIN" gateway --config "$DIR/gateway.toml" >/dev/null 2>"$DIR/gw.err" & GW=$!
  for _ in $(seq 1 300); do
    curl -sf --cacert "$DIR/ca.pem" -H "Authorization: Bearer $TOKEN" https://localhost:18445/orders/index.json >/dev/null 2>&1 && break
    sleep 0.5
  done
  python3 bench/sequential_requests.py "$DIR/ca.pem" "$TOKEN" "$1" >/dev/null
  kill -INT $GW; wait $GW || true
  callgrind_annotate "$DIR/cg.$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'
}
a=$(run "$N1"); b=$(run "$N2")
echo "callgrind totals: $N1 requests $a, $N2 requests $b; per request $(( (b - a) / (N2 - N1) )) instructions"
