#!/usr/bin/env bash
# Gateway benchmark: a static upstream (nginx) behind
#   (a) palisade gateway with TLS, ES256 JWT verification, a Cedar policy and
#       rate limits all enabled, and
#   (b) nginx as a plain TLS reverse proxy,
# driven by the same load tool (wrk, 1 thread, keep-alive) in one run.
# Reports requests/s, p50/p99 latency and peak RSS side by side (medians of
# ROUNDS), p99 added latency at half of the gateway's peak rate (medians of
# ROUNDS, alternating), and the
# gateway's RSS with 10,000 idle keep-alive TLS connections.
# Needs: nginx, wrk (Debian packages), python3.
# Usage: [BIN=path/to/palisade] bench/gateway.sh (default: this checkout's dist build: fat LTO)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
IDLE=${IDLE:-10000}
# separate: the static upstream is its own nginx instance, apart from the
# nginx proxy (as in a deployment). shared: one nginx serves both the proxy
# and the upstream (the layout of runs A-F in docs/benchmarks.md).
UPSTREAM=${UPSTREAM:-separate}
case "$UPSTREAM" in separate|shared) ;; *) echo "UPSTREAM must be separate or shared"; exit 1;; esac
# PIN=1: the proxy under test (palisade or nginx, one worker each) runs alone
# on CPU 1; wrk, the static upstream and the idle-connection client share
# CPU 0. Without it (PIN=0) every process floats over all cores, as in runs
# A-AD of docs/benchmarks.md, and a proxy's tail latency includes waiting for
# a core that wrk or the upstream holds.
PIN=${PIN:-0}
case "$PIN" in
  0) LOAD=(); PROXY=() ;;
  1) command -v taskset >/dev/null || { echo "PIN=1 needs taskset (util-linux)"; exit 1; }
     [ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs two cores"; exit 1; }
     [ "$UPSTREAM" = separate ] || { echo "PIN=1 needs UPSTREAM=separate"; exit 1; }
     LOAD=(taskset -c 0); PROXY=(taskset -c 1) ;;
  *) echo "PIN must be 0 or 1"; exit 1 ;;
esac
for tool in nginx wrk python3; do command -v $tool >/dev/null || { echo "missing $tool (apt-get install nginx-light wrk)"; exit 1; }; done
cargo build --profile dist -q -p palisade-cli -p palisade-bench
T=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
DIR=$(mktemp -d); chmod 755 "$DIR"  # nginx workers must read www/
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$T/dist/palisade-bench" gateway-setup "$DIR" --ports 18081,18444,18445,19902
TOKEN=$(cat "$DIR/token.txt")
if [ "$UPSTREAM" = shared ]; then
  nginx -c "$DIR/shared.conf" & NGINX=$!; UP=$NGINX
else
  PROXY_CONF=$DIR/proxy.conf
  if [ "$PIN" = 1 ]; then
    # one core for the proxy: one nginx worker, as palisade starts one
    # worker per core it may run on
    PROXY_CONF=$DIR/proxy-pinned.conf
    sed 's/^worker_processes 2;/worker_processes 1;/' "$DIR/proxy.conf" > "$PROXY_CONF"
  fi
  ${LOAD[@]+"${LOAD[@]}"} nginx -c "$DIR/upstream.conf" & UP=$!
  ${PROXY[@]+"${PROXY[@]}"} nginx -c "$PROXY_CONF" & NGINX=$!
fi
BIN=${BIN:-$T/dist/palisade}
${PROXY[@]+"${PROXY[@]}"} "$BIN" gateway --config "$DIR/gateway.toml" >/dev/null 2>"$DIR/gateway.err" & GW=$!
cleanup() { [ -s "$DIR/gateway.err" ] && tail -3 "$DIR/gateway.err" >&2; kill $GW 2>/dev/null || true; kill $NGINX $UP 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -sf --cacert "$DIR/ca.pem" -H "Authorization: Bearer $TOKEN" https://localhost:18445/orders/index.json >/dev/null 2>&1 \
    && curl -sf --cacert "$DIR/ca.pem" https://localhost:18444/orders/index.json >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf --cacert "$DIR/ca.pem" -H "Authorization: Bearer $TOKEN" https://localhost:18445/orders/index.json >/dev/null
# the gateway must really enforce: no token -> 401
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$DIR/ca.pem" https://localhost:18445/orders/index.json)" = 401 ]

hwm() { local t=0; for p in "$@"; do v=$(awk '/VmHWM/{print $2}' /proc/$p/status 2>/dev/null || echo 0); t=$((t+v)); done; echo $((t/1024)); }
rss() { awk '/VmRSS/{print int($2/1024)}' /proc/$1/status; }
nginx_pids() { pgrep -P $NGINX | tr '\n' ' '; echo $NGINX; }

# wrk output -> "rps p50_ms p99_ms"
parse() { python3 -c '
import re,sys
t=sys.stdin.read()
def ms(v,u): return float(v)*{"us":0.001,"ms":1,"s":1000}[u]
rps=float(re.search(r"Requests/sec:\s+([\d.]+)",t).group(1))
p50=re.search(r"50%\s+([\d.]+)(us|ms|s)",t); p99=re.search(r"99%\s+([\d.]+)(us|ms|s)",t)
errs=re.search(r"Non-2xx or 3xx responses:\s+(\d+)",t)
print(rps, ms(*p50.groups()), ms(*p99.groups()), errs.group(1) if errs else 0)'; }

run() { ${LOAD[@]+"${LOAD[@]}"} wrk -t1 -c$CONNS -d${DURATION}s --latency -H "Authorization: Bearer $TOKEN" "$1" | parse; }

declare -a G N U
for r in $(seq 1 $ROUNDS); do
  N+=("$(run https://localhost:18444/orders/index.json)")
  G+=("$(run https://localhost:18445/orders/index.json)")
  # the upstream alone (plain HTTP), to show it is not what limits the proxies
  U+=("$(run http://127.0.0.1:18081/orders/index.json)")
done
median() { python3 -c '
import sys,statistics
rows=[list(map(float,l.split())) for l in sys.stdin.read().strip().split("\n")]
print(" ".join(str(statistics.median(c)) for c in zip(*rows)))'; }
NM=$(printf '%s\n' "${N[@]}" | median); GM=$(printf '%s\n' "${G[@]}" | median)
read -r u_rps _ <<<"$(printf '%s\n' "${U[@]}" | median)"
rounds() { printf '%s\n' "$@" | awk '{printf "%s%d", (NR>1?", ":""), $1}'; }
read -r n_rps n_p50 n_p99 n_err <<<"$NM"; read -r g_rps g_p50 g_p99 g_err <<<"$GM"
n_rss=$(hwm $(nginx_pids)); g_rss=$(hwm $GW)

# p99 at half of the gateway's peak rate: C connections, each waiting a
# think time of D ms on average between requests; C is calibrated once
# against the measured rate, and the same C and D then drive nginx, so both
# carry the same offered load.
# THINK=random (default): each wait is drawn from 0..2D ms, as independent
# clients would arrive. THINK=fixed: every wait is exactly D ms (runs A-AD in
# docs/benchmarks.md); the connections then fall into step, and every
# millisecond tick sends a burst that queues behind itself in every process.
THINK=${THINK:-random}
D=4
case "$THINK" in
  random) echo "function delay() return math.random(0, 2 * $D) end" > "$DIR/delay.lua" ;;
  fixed) echo "function delay() return $D end" > "$DIR/delay.lua" ;;
  *) echo "THINK must be random or fixed"; exit 1 ;;
esac
target=$(python3 -c "print($g_rps/2)")
C=$(python3 -c "import math; print(max(1, math.ceil($target*($D+$g_p50)/1000)))")
half() { ${LOAD[@]+"${LOAD[@]}"} wrk -t1 -c$C -d${DURATION}s --latency -s "$DIR/delay.lua" -H "Authorization: Bearer $TOKEN" "$1" | parse; }
read -r h_rps _ h_p99 _ <<<"$(half https://localhost:18445/orders/index.json)"
C=$(python3 -c "import math; print(max(1, math.ceil($C*$target/max($h_rps,1))))")
# then ROUNDS rounds, palisade and nginx alternating, medians: a single 10 s
# p99 moves by a millisecond between runs on a busy machine
# (and the upstream alone, plain HTTP, under the same C and D: the floor
# that wrk, the upstream and the machine set without any proxy)
declare -a HG HN HU
for r in $(seq 1 $ROUNDS); do
  HG+=("$(half https://localhost:18445/orders/index.json)")
  HN+=("$(half https://localhost:18444/orders/index.json)")
  HU+=("$(half http://127.0.0.1:18081/orders/index.json)")
done
read -r h_rps _ h_p99 _ <<<"$(printf '%s\n' "${HG[@]}" | median)"
read -r d_rps _ d_p99 _ <<<"$(printf '%s\n' "${HN[@]}" | median)"
read -r _ _ u_p99 _ <<<"$(printf '%s\n' "${HU[@]}" | median)"
p99s() { printf '%s\n' "$@" | awk '{printf "%s%.2f", (NR>1?", ":""), $3}'; }

# idle keep-alive connections: the same client against palisade, then nginx
# (each connection makes one request, then stays open and idle)
idle() { # port pids... -> "rss_mib|client's summary line"
  local port=$1; shift
  exec 3> >(${LOAD[@]+"${LOAD[@]}"} python3 bench/idle_conns.py 127.0.0.1 "$port" "$DIR/ca.pem" "$IDLE" /orders/index.json "$TOKEN" > "$DIR/idle.out" 2>&1)
  local pid=$!
  for _ in $(seq 1 600); do grep -q "open=" "$DIR/idle.out" 2>/dev/null && break; sleep 0.5; done
  sleep 2
  local t=0
  for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' /proc/$p/status))); done
  echo "$((t/1024))|$(head -1 "$DIR/idle.out")"
  exec 3>&-
  wait $pid 2>/dev/null || true
  sleep 1
}
IFS='|' read -r idle_rss idle_line <<<"$(idle 18445 $GW)"
IFS='|' read -r nidle_rss nidle_line <<<"$(idle 18444 $(nginx_pids))"

echo "upstream layout: $UPSTREAM; pinned: $([ "$PIN" = 1 ] && echo "proxy on CPU 1, wrk + upstream + idle client on CPU 0" || echo no)"
echo "rounds (req/s): nginx $(rounds "${N[@]}"); palisade $(rounds "${G[@]}"); upstream alone $(rounds "${U[@]}")"
echo "rounds at half load (p99 ms, $C connections, think time $THINK, mean ${D} ms): nginx $(p99s "${HN[@]}"); palisade $(p99s "${HG[@]}"); upstream alone $(p99s "${HU[@]}")"
python3 - "$UPSTREAM" "$u_rps" "$n_rps" "$n_p50" "$n_p99" "$n_rss" "$g_rps" "$g_p50" "$g_p99" "$g_rss" "$h_rps" "$h_p99" "$d_rps" "$d_p99" "$idle_rss" "$idle_line" "$n_err" "$g_err" "$nidle_rss" "$nidle_line" "$u_p99" <<'PY'
import sys
layout=sys.argv[1]; u_rps=float(sys.argv[2]); a=sys.argv[3:]
n_rps,n_p50,n_p99,n_rss,g_rps,g_p50,g_p99,g_rss,h_rps,h_p99,d_rps,d_p99=map(float,a[:12])
idle_rss=a[12]; idle=a[13]; n_err=a[14]; g_err=a[15]; nidle_rss=a[16]; nidle=a[17]; u_p99=float(a[18])
print("| proxy | requests/s (median) | p50 ms | p99 ms | peak RSS MiB | non-2xx |")
print("|---|---:|---:|---:|---:|---:|")
print(f"| nginx 1.22 plain TLS reverse proxy | {n_rps:.0f} | {n_p50:.2f} | {n_p99:.2f} | {n_rss:.0f} | {n_err} |")
print(f"| palisade gateway: TLS + ES256 JWT + Cedar + rate limits | {g_rps:.0f} | {g_p50:.2f} | {g_p99:.2f} | {g_rss:.0f} | {g_err} |")
print()
print(f"throughput ratio palisade/nginx: {g_rps/n_rps:.2f}")
print(f"p99 at half of palisade's peak ({h_rps:.0f} req/s through palisade, {d_rps:.0f} req/s through nginx): palisade {h_p99:.2f} ms, nginx {d_p99:.2f} ms, added {h_p99-d_p99:+.2f} ms (upstream alone, no proxy, same load: {u_p99:.2f} ms)")
print(f"palisade RSS with idle keep-alive TLS connections ({idle}): {idle_rss} MiB")
print(f"upstream alone, plain HTTP, same wrk: {u_rps:.0f} req/s")
print(f"nginx proxy RSS (master + workers{', also serving the upstream' if layout == 'shared' else ''}) with idle keep-alive TLS connections ({nidle}): {nidle_rss} MiB")
PY
