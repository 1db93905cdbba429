#!/usr/bin/env bash
# WAF benchmark (issue #15, performance): in one run, behind TLS and in front of
# the same static upstream, driven by the same wrk with the same requests:
#   (1) nginx + ModSecurity 3 (Debian's libnginx-mod-http-modsecurity) running
#       OWASP CRS v4.28.0 from crs/ at paranoia level 1, blocking
#       (SecRuleEngine On; tx.allowed_methods with PUT PATCH DELETE, as the
#       gateway's default), one worker;
#   (2) the palisade gateway without inspection (inspection = "off",
#       crs = "off");
#   (3) the gateway with crs = "block", crs_paranoia = 1 (inspection "off":
#       CRS only);
#   (4) the same at crs_paranoia = 2.
# The ModSecurity setup is bench/waf-corpus/modsecurity.sh's (the engine
# rules 200000/200001/200006/200002/200003, then crs-setup.conf.example and
# rules/*.conf), with the audit log on relevant statuses only, as ModSecurity's
# recommended configuration has it.
#
# The requests: benign API calls from crates/waf/tests/data/benign-corpus.jsonl,
# GETs with 0-8 query parameters and JSON bodies (POST, PUT, PATCH) of
# BODY_MIN..BODY_MAX bytes, interleaved, with the headers Node's fetch sends
# (as bench/waf-corpus/replay.py), cycled by a wrk Lua script. Each request is
# first sent once through every proxy; any that nginx + ModSecurity, the
# gateway without inspection or the gateway at PL1 does not answer 2xx is
# dropped (FILTER=pl2: also those the gateway refuses at PL2).
#
# Measured per proxy (ROUNDS rounds, proxies alternating, medians):
#   - requests/s, p50 and p99 at full load (wrk, 1 thread, CONNS connections);
#   - the proxy's CPU time (utime + stime of all its processes and threads,
#     /proc/PID/stat, as bench/cpu_per_request.py) per completed request;
#   - p99 at half of the gateway-without-inspection's peak rate: with wrk2 (or a
#     wrk with -R) at that constant rate; otherwise as bench/gateway.sh does it:
#     C connections with a random think time of 0..2D ms (Lua delay()) between
#     requests, C calibrated against the gateway without inspection, the same C
#     and D then for every proxy;
#   - p99 of the gateway with and without CRS PL1 at half of the CRS PL1
#     gateway's own peak rate (the same method): what CRS adds to the latency
#     of a gateway that is not saturated;
#   - RSS (and PSS: nginx's master and worker share the rule set's pages) after
#     a warm-up, and peak RSS at the end.
# Targets checked: PL1 throughput >= 20x nginx + ModSecurity; p99 added by CRS
# PL1 over the gateway without CRS at half load < 2 ms; PL1 throughput >=
# 0.75x the gateway without inspection.
#
# PIN=1 (default with two or more cores): every proxy runs on CPU 1 (the
# gateway then starts one worker: it starts one per core it may run on; CRS
# evaluation runs on its blocking pool, on that same core), wrk and the
# upstream on CPU 0. PIN=0: nothing pinned (the gateway then starts one worker
# per core, nginx still one worker).
#
# Needs: nginx, libnginx-mod-http-modsecurity, wrk, python3, openssl
# (Debian: apt-get install nginx libnginx-mod-http-modsecurity wrk).
# Usage: [BIN=path/to/palisade] bench/waf.sh
#   (default: builds this checkout's dist profile, as bench/gateway.sh)
# Environment: BIN, DURATION (10 s), ROUNDS (3), CONNS (32), PORT (18500: the
# upstream; the proxies on PORT+1..PORT+4), PIN (1), THINK (random | fixed),
# BODY_MIN (256), BODY_MAX (2048), FILTER (pl1 | pl2), WARMUP (3 s),
# START_TIMEOUT (300 s), CORPUS.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
PORT=${PORT:-18500}
THINK=${THINK:-random}
BODY_MIN=${BODY_MIN:-256}
BODY_MAX=${BODY_MAX:-2048}
FILTER=${FILTER:-pl1}
WARMUP=${WARMUP:-3}
START_TIMEOUT=${START_TIMEOUT:-300}
CORPUS=${CORPUS:-$REPO/crates/waf/tests/data/benign-corpus.jsonl}
CRS_DIR=$REPO/crs
MODULE=/usr/lib/nginx/modules/ngx_http_modsecurity_module.so
D=4  # mean think time (ms) at half load

die() { echo "waf.sh: $*" >&2; exit 1; }
for v in DURATION ROUNDS CONNS PORT BODY_MIN BODY_MAX WARMUP START_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || die "$v: a positive integer"
done
[ "$BODY_MAX" -le 2048 ] || die "BODY_MAX: at most 2048"
case "$THINK" in random|fixed) ;; *) die "THINK must be random or fixed" ;; esac
case "$FILTER" in pl1|pl2) ;; *) die "FILTER must be pl1 or pl2" ;; esac
for tool in nginx wrk python3 openssl; do
  command -v $tool >/dev/null || die "missing $tool (apt-get install nginx libnginx-mod-http-modsecurity wrk openssl)"
done
[ -f "$MODULE" ] || die "no $MODULE (apt-get install libnginx-mod-http-modsecurity)"
[ -f "$CRS_DIR/crs-setup.conf.example" ] && [ -d "$CRS_DIR/rules" ] || die "no CRS in $CRS_DIR"
[ -f "$CORPUS" ] || die "no corpus at $CORPUS"
if [ -z "${PIN:-}" ]; then
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN=1; else PIN=0; fi
fi
case "$PIN" in
  0) LOAD=(); PROXY=() ;;
  1) command -v taskset >/dev/null || die "PIN=1 needs taskset (util-linux)"
     [ "$(nproc)" -ge 2 ] || die "PIN=1 needs two cores"
     LOAD=(taskset -c 0); PROXY=(taskset -c 1) ;;
  *) die "PIN must be 0 or 1" ;;
esac
# constant-rate load at half the peak: wrk2, or a wrk that has -R
RATE_WRK=""
if command -v wrk2 >/dev/null; then RATE_WRK=wrk2
elif wrk 2>&1 | grep -q -- '--rate'; then RATE_WRK=wrk; fi

if [ -z "${BIN:-}" ]; then
  cargo build --profile dist -q -p palisade-cli
  T=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  BIN=$T/dist/palisade
fi
[ -x "$BIN" ] || die "no palisade binary at $BIN"

UP_PORT=$PORT
NAMES=(modsec off pl1 pl2)
declare -A PPORT=([modsec]=$((PORT + 1)) [off]=$((PORT + 2)) [pl1]=$((PORT + 3)) [pl2]=$((PORT + 4)))
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $UP_PORT "${PPORT[@]}"; do ! port_busy "$p" || die "port $p on 127.0.0.1 is in use (set PORT)"; done

DIR=$(mktemp -d "${TMPDIR:-/tmp}/palisade-wafbench.XXXXXX"); chmod 755 "$DIR"  # nginx workers read it
mkdir -p "$DIR/tmp" "$DIR/logs"
PIDS=()
cleanup() {
  local p k kids=()
  for p in ${PIDS[@]+"${PIDS[@]}"}; do
    for k in $(pgrep -P "$p" 2>/dev/null); do kids+=("$k"); done
    kill "$p" 2>/dev/null || true
  done
  for p in ${PIDS[@]+"${PIDS[@]}"}; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  # nginx workers whose master went before them
  for k in ${kids[@]+"${kids[@]}"}; do kill -9 "$k" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- helper (request list, reachability check, Lua, wrk output, report)
cat >"$DIR/helper.py" <<'PY'
import json, os, re, socket, ssl, statistics, sys, http.client

# What Node's fetch (undici) sends, as bench/waf-corpus/replay.py.
FETCH_HEADERS = [("Accept", "*/*"), ("Accept-Language", "*"), ("Sec-Fetch-Mode", "cors"),
                 ("User-Agent", "node"), ("Accept-Encoding", "gzip, deflate"),
                 ("Connection", "keep-alive")]

def gen(corpus, body_min, body_max, out):
    rows = [json.loads(l) for l in open(corpus, encoding="utf-8") if l.strip()]
    gets, bodies = [], []
    for r in rows:
        body = r.get("body", "").encode("utf-8")
        nq = len(r["query"].split("&")) if r.get("query") else 0
        if r["method"] == "GET" and not body and nq <= 8:
            gets.append(r)
        elif (r["method"] in ("POST", "PUT", "PATCH")
              and r.get("content_type", "").lower().startswith("application/json")
              and int(body_min) <= len(body) <= int(body_max)):
            bodies.append(r)
    # interleave the two kinds evenly
    mix = sorted([((i + 0.5) / len(gets), 0, r) for i, r in enumerate(gets)]
                 + [((i + 0.5) / len(bodies), 1, r) for i, r in enumerate(bodies)],
                 key=lambda t: (t[0], t[1]))
    reqs = []
    for _, _, r in mix:
        body = r.get("body", "").encode("utf-8")
        target = r["path"] + ("?" + r["query"] if r.get("query") else "")
        head = [f"{r['method']} {target} HTTP/1.1", "Host: localhost"]
        head += [f"{k}: {v}" for k, v in FETCH_HEADERS]
        if body:
            head += [f"Content-Type: {r['content_type']}", f"Content-Length: {len(body)}"]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body
        reqs.append({"id": r["id"], "method": r["method"], "body": len(body),
                     "query_params": len(r["query"].split("&")) if r.get("query") else 0,
                     "raw": raw.decode("latin-1")})
    json.dump(reqs, open(out, "w"))
    print(f"{len(reqs)} candidate requests: {len(gets)} GETs, {len(bodies)} JSON bodies of {body_min}-{body_max} bytes")

class Conn:
    def __init__(self, port, cafile, timeout=120):
        self.port, self.timeout, self.sock = port, timeout, None
        self.ctx = ssl.create_default_context(cafile=cafile)
    def send(self, raw, method):
        for attempt in (1, 2):
            try:
                if self.sock is None:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
                    self.sock = self.ctx.wrap_socket(s, server_hostname="localhost")
                self.sock.sendall(raw)
                resp = http.client.HTTPResponse(self.sock, method=method)
                resp.begin()
                resp.read()
                if resp.will_close:
                    self.close()
                return resp.status
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
    def close(self):
        if self.sock is not None:
            try: self.sock.close()
            except OSError: pass
            self.sock = None

def check(reqs_file, cafile, out, *proxies):
    """Send every request once through each proxy (name=port); write the
    statuses."""
    reqs = json.load(open(reqs_file))
    res = {}
    for spec in proxies:
        name, port = spec.split("=")
        c = Conn(int(port), cafile)
        res[name] = {r["id"]: c.send(r["raw"].encode("latin-1"), r["method"]) for r in reqs}
        c.close()
    json.dump(res, open(out, "w"))

def lua_str(b):
    return '"' + "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else "\\%03d" % c
                         for c in b) + '"'

def select(reqs_file, statuses_file, filt, labels_json, lua_out):
    """Keep the requests every proxy that matters answered 2xx; write the Lua
    script cycling over them."""
    reqs = json.load(open(reqs_file)); st = json.load(open(statuses_file))
    labels = json.loads(labels_json)
    must = ["modsec", "off", "pl1"] + (["pl2"] if filt == "pl2" else [])
    kept = [r for r in reqs if all(200 <= st[n][r["id"]] < 300 for n in must)]
    for n in st:
        refused = [(r["id"], st[n][r["id"]]) for r in reqs if not 200 <= st[n][r["id"]] < 300]
        shown = ", ".join(f"{i} ({s})" for i, s in refused[:8]) + (", ..." if len(refused) > 8 else "")
        print(f"  refused by {labels[n]}: {len(refused)}{': ' + shown if refused else ''}")
    if not kept:
        sys.exit("no request passes every proxy")
    gets = [r for r in kept if r["method"] == "GET"]; bodies = [r for r in kept if r["method"] != "GET"]
    sizes = sorted(r["body"] for r in bodies)
    methods = {m: sum(1 for r in bodies if r["method"] == m) for m in ("POST", "PUT", "PATCH")}
    print(f"kept {len(kept)} of {len(reqs)} requests (dropped those refused by "
          f"{', '.join(labels[n] for n in must)}): {len(gets)} GETs "
          f"(0-{max((r['query_params'] for r in gets), default=0)} query parameters), "
          f"{len(bodies)} JSON bodies ({', '.join(f'{v} {k}' for k, v in methods.items() if v)}; "
          f"{sizes[0] if sizes else 0}-{sizes[-1] if sizes else 0} bytes, median "
          f"{statistics.median(sizes) if sizes else 0:.0f})")
    if filt == "pl1":
        n2 = sum(1 for r in kept if not 200 <= st["pl2"][r["id"]] < 300)
        if n2:
            print(f"  of these, the gateway at PL2 refuses {n2} (counted as non-2xx in its runs; FILTER=pl2 drops them)")
    with open(lua_out, "w") as f:
        f.write("local reqs = {\n" + ",\n".join(lua_str(r["raw"].encode("latin-1")) for r in kept) + "\n}\n")
        f.write("local n = #reqs\nlocal i = 0\n"
                "function request()\n  i = i % n + 1\n  return reqs[i]\nend\n")

def ms(v, u):
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]

def parse(ticks, duration, clk):
    """wrk (or wrk2) output on stdin -> one line of figures."""
    t = sys.stdin.read()
    try:
        n = int(re.search(r"(\d+) requests in", t).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
        p50 = ms(*re.search(r"\s50(?:\.0+)?%\s+([\d.]+)(us|ms|s)\b", t).groups())
        p99 = ms(*re.search(r"\s99(?:\.0+)?%\s+([\d.]+)(us|ms|s)\b", t).groups())
    except AttributeError:
        sys.exit("unexpected wrk output:\n" + t)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    cpu_s = int(ticks) / int(clk)
    cpu_us = cpu_s * 1e6 / n if n else float("nan")
    print(rps, p50, p99, non2xx.group(1) if non2xx else 0,
          sum(map(int, errs.groups())) if errs else 0, n, cpu_us, 100 * cpu_s / float(duration))

def report(results, labels_json, conns, half_desc, rounds, own_desc):
    labels = json.loads(labels_json)
    full, half, own, mem = {}, {}, {}, {}
    for line in open(results):
        f = line.split()
        if f[0] == "full": full.setdefault(f[1], []).append(list(map(float, f[2:])))
        elif f[0] == "half": half.setdefault(f[1], []).append(list(map(float, f[2:])))
        elif f[0] == "own": own.setdefault(f[1], []).append(list(map(float, f[2:])))
        elif f[0] == "mem": mem[f[1]] = list(map(float, f[2:]))
    med = lambda rows: [statistics.median(c) for c in zip(*rows)]
    F = {k: med(v) for k, v in full.items()}; H = {k: med(v) for k, v in half.items()}
    O = {k: med(v) for k, v in own.items()}
    print("rounds at full load (req/s): " + "; ".join(
        f"{labels[k]} {', '.join(f'{r[0]:.0f}' for r in full[k])}" for k in full))
    print(f"rounds at half load ({half_desc}; p99 ms): " + "; ".join(
        f"{labels[k]} {', '.join(f'{r[2]:.2f}' for r in half[k])}" for k in half))
    print(f"rounds at half of the CRS PL1 gateway's own peak ({own_desc}; req/s, p99 ms): " + "; ".join(
        f"{labels[k]} {', '.join(f'{r[0]:.0f} {r[2]:.2f}' for r in own[k])}" for k in own))
    print()
    base = F["modsec"][0]
    print(f"| proxy (TLS, 1 worker) | req/s | × nginx+ModSec | p50 ms | p99 ms | half load: req/s, p99 ms "
          f"| CPU µs/req | proxy CPU % | RSS MiB | PSS MiB | peak RSS MiB | non-2xx / errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in ("modsec", "off", "pl1", "pl2"):
        rps, p50, p99, non2xx, errs, n, cpu_us, cpu_pct = F[k]
        hr, _, hp99 = H[k][:3]
        rss, pss, hwm = mem[k]
        print(f"| {labels[k]} | {rps:.0f} | {rps / base:.1f} | {p50:.2f} | {p99:.2f} | {hr:.0f}, {hp99:.2f} "
              f"| {cpu_us:.1f} | {cpu_pct:.0f} | {rss:.1f} | {pss:.1f} | {hwm:.1f} "
              f"| {sum(r[3] for r in full[k]) + sum(r[3] for r in half[k]):.0f} / "
              f"{sum(r[4] for r in full[k]) + sum(r[4] for r in half[k]):.0f} |")
    print()
    print("(medians of %d rounds; full load: wrk 1 thread, %d connections; CPU: utime+stime of the proxy's processes "
          "per completed request at full load; RSS/PSS after warm-up, nginx: master + worker; "
          "non-2xx/errors: totals over all runs)" % (int(rounds), int(conns)))
    off_cpu, off_rss = F["off"][6], mem["off"][0]
    for k in ("pl1", "pl2"):
        print(f"{labels[k]}: CPU per inspected request {F[k][6]:.1f} µs, of which CRS (over the gateway without "
              f"inspection) {F[k][6] - off_cpu:+.1f} µs; loaded rule set {mem[k][0] - off_rss:+.1f} MiB RSS "
              f"({mem[k][0]:.1f} MiB against {off_rss:.1f} MiB without CRS)")
    print(f"{labels['modsec']}: CPU per request {F['modsec'][6]:.1f} µs; PSS {mem['modsec'][1]:.1f} MiB "
          f"(RSS of master + worker {mem['modsec'][0]:.1f} MiB)")
    print()
    t1 = F["pl1"][0] / base
    added = H["pl1"][2] - H["off"][2]
    t3 = F["pl1"][0] / F["off"][0]
    ok = lambda b: "met" if b else "NOT met"
    print("targets:")
    print(f"  PL1 throughput >= 20x nginx + ModSecurity: {t1:.1f}x -> {ok(t1 >= 20)}")
    print(f"  p99 added by CRS PL1 at half load < 2 ms: {H['pl1'][2]:.2f} - {H['off'][2]:.2f} = {added:+.2f} ms "
          f"-> {ok(added < 2)}")
    added_own = O["pl1"][2] - O["off"][2]
    print(f"    read at half of the CRS PL1 gateway's own peak ({O['pl1'][0]:.0f} req/s served): "
          f"{O['pl1'][2]:.2f} - {O['off'][2]:.2f} = {added_own:+.2f} ms -> {ok(added_own < 2)}")
    print(f"  PL1 throughput >= 0.75x the gateway without inspection: {t3:.2f}x "
          f"(inspection costs {100 * (1 - t3):.0f} %) -> {ok(t3 >= 0.75)}")
    bad = [labels[k] for k in F if F[k][4] > 0 or (k != "pl2" and F[k][3] > 0)]
    if bad:
        print(f"warning: non-2xx responses or socket errors at full load through: {', '.join(bad)}")
    hot = [labels[k] for k in ("off",) if F[k][7] < 80]
    if hot:
        print(f"note: the gateway without inspection used {F['off'][7]:.0f} % of its core at full load: "
              f"the load side (wrk, upstream) may be what limits it")

if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
PY
H() { python3 "$DIR/helper.py" "$@"; }

# ---- certificate (one self-signed certificate for every proxy)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
chmod 644 "$DIR/key.pem"

user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
nginx_head() { # name
  cat <<EOF
$user_line
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $DIR/$1.pid;
error_log $DIR/logs/$1-error.log warn;
events { worker_connections 16000; }
EOF
}
nginx_temp() { # name
  local t=$DIR/tmp/$1
  echo "client_body_temp_path $t-body; proxy_temp_path $t-proxy; fastcgi_temp_path $t-fastcgi; uwsgi_temp_path $t-uwsgi; scgi_temp_path $t-scgi;"
}

# ---- the static upstream: 200 and a small JSON document to every method
{ nginx_head upstream; cat <<EOF
http {
  access_log off;
  keepalive_requests 1000000;
  $(nginx_temp upstream)
  server {
    listen 127.0.0.1:$UP_PORT;
    location / {
      default_type application/json;
      return 200 '{"ok":true,"id":"42","status":"accepted"}\n';
    }
  }
}
EOF
} >"$DIR/upstream.conf"

# ---- (1) nginx + ModSecurity + CRS PL1
unicode_map=""
[ -f /etc/nginx/unicode.mapping ] && unicode_map="SecUnicodeMapFile /etc/nginx/unicode.mapping 20127"
cat >"$DIR/modsecurity.conf" <<EOF
# ModSecurity's recommended engine settings, blocking mode, no response body
# inspection; audit log for relevant statuses only (the recommended default).
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 131072
SecRequestBodyLimitAction Reject
SecRequestBodyJsonDepthLimit 1024
SecArgumentsLimit 10000
SecResponseBodyAccess Off
SecTmpDir $DIR/tmp
SecDataDir $DIR/tmp
SecArgumentSeparator &
SecCookieFormat 0
$unicode_map
SecAuditEngine RelevantOnly
SecAuditLogRelevantStatus "^(?:5|4(?!04))"
SecAuditLogParts ABHZ
SecAuditLogType Serial
SecAuditLogFormat JSON
SecAuditLog $DIR/logs/modsec_audit.json

# The engine rules (as crates/waf/src/crs.rs ENGINE_RULES).
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "^application/[a-z0-9.-]+[+]json" "id:200006,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:400,msg:'Multipart request body failed strict validation.'"

SecAction "id:900000,phase:1,pass,nolog,t:none,setvar:tx.blocking_paranoia_level=1"
SecAction "id:900200,phase:1,pass,nolog,t:none,setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE'"
Include $CRS_DIR/crs-setup.conf.example
Include $CRS_DIR/rules/*.conf
EOF
{ echo "load_module $MODULE;"; nginx_head modsec; cat <<EOF
http {
  access_log off;
  keepalive_requests 1000000;
  $(nginx_temp modsec)
  client_max_body_size 16m;
  client_body_buffer_size 1m;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:${PPORT[modsec]} ssl;
    server_name localhost;
    ssl_certificate $DIR/cert.pem;
    ssl_certificate_key $DIR/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    modsecurity on;
    modsecurity_rules_file $DIR/modsecurity.conf;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$DIR/modsec.conf"

# ---- (2)-(4) the gateway
echo 'permit(principal, action, resource);' >"$DIR/policies.cedar"
gateway_conf() { # name crs-lines
  local waf=""
  [ "$1" = off ] || waf="[waf]
crs_dir = \"$CRS_DIR\""
  cat <<EOF
log_level = "warn"

[[listeners]]
name = "public"
address = "127.0.0.1:${PPORT[$1]}"
certificates = [{ cert_file = "$DIR/cert.pem", key_file = "$DIR/key.pem" }]

[admin]
address = "127.0.0.1:0"

[limits]
max_concurrent_requests_per_client = 65536

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:$UP_PORT"]

[authorization]
policy_file = "$DIR/policies.cedar"

$waf

[[routes]]
name = "api"
path_prefix = "/"
upstream = "app"
anonymous = true
inspection = "off"
$2
EOF
}
gateway_conf off 'crs = "off"' >"$DIR/off.toml"
gateway_conf pl1 'crs = "block"
crs_paranoia = 1' >"$DIR/pl1.toml"
gateway_conf pl2 'crs = "block"
crs_paranoia = 2' >"$DIR/pl2.toml"

for c in upstream modsec; do
  nginx -t -q -p "$DIR" -e "$DIR/logs/$c-error.log" -c "$DIR/$c.conf" 2>"$DIR/logs/$c-t.err" \
    || { cat "$DIR/logs/$c-t.err" >&2; die "nginx -t failed for $c.conf"; }
done

# ---- start everything
declare -A PID
${LOAD[@]+"${LOAD[@]}"} nginx -p "$DIR" -e "$DIR/logs/upstream-error.log" -c "$DIR/upstream.conf" & PID[upstream]=$!; PIDS+=($!)
${PROXY[@]+"${PROXY[@]}"} nginx -p "$DIR" -e "$DIR/logs/modsec-error.log" -c "$DIR/modsec.conf" & PID[modsec]=$!; PIDS+=($!)
for c in off pl1 pl2; do
  ${PROXY[@]+"${PROXY[@]}"} "$BIN" gateway --config "$DIR/$c.toml" >/dev/null 2>"$DIR/logs/$c.err" & PID[$c]=$!; PIDS+=($!)
done
wait_port() { # name port
  local t0=$SECONDS
  until port_busy "$2"; do
    kill -0 "${PID[$1]}" 2>/dev/null || { tail -5 "$DIR/logs/$1"*.err* "$DIR/logs/$1-error.log" 2>/dev/null >&2; die "$1 exited"; }
    [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ] || die "$1 does not listen on $2 after ${START_TIMEOUT}s"
    sleep 0.2
  done
}
wait_port upstream $UP_PORT
for n in "${NAMES[@]}"; do wait_port "$n" "${PPORT[$n]}"; done
proxy_pids() { # name -> the pids of its processes
  echo "${PID[$1]}"
  [ "$1" = modsec ] && pgrep -P "${PID[$1]}" || true
}
declare -A PP
for n in "${NAMES[@]}"; do PP[$n]=$(proxy_pids "$n" | tr '\n' ' '); done
[ "$(echo ${PP[modsec]} | wc -w)" -ge 2 ] || die "nginx + ModSecurity has no worker"

nginx_version=$(nginx -v 2>&1 | sed 's/^nginx version: //')
modsec_version=$(dpkg-query -W -f '${Version}' libmodsecurity3 2>/dev/null || echo unknown)
crs_version=$(sed -nE 's/^SecComponentSignature "(.*)"/\1/p' "$CRS_DIR/rules/REQUEST-901-INITIALIZATION.conf")
gw_version=$("$BIN" --version 2>/dev/null | head -1 || echo palisade)
declare -A LABEL=([modsec]="nginx + ModSecurity + CRS PL1" \
  [off]="palisade, no inspection" [pl1]="palisade + CRS PL1" [pl2]="palisade + CRS PL2")
LABELS=$(python3 -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  modsec "${LABEL[modsec]}" off "${LABEL[off]}" pl1 "${LABEL[pl1]}" pl2 "${LABEL[pl2]}")
echo "palisade: $BIN ($gw_version); nginx $nginx_version with libmodsecurity3 $modsec_version; $crs_version from crs/"
echo "pinned: $([ "$PIN" = 1 ] && echo "proxies on CPU 1, wrk + upstream on CPU 0" || echo no);" \
  "threads in the gateway process (no inspection): $(awk '/^Threads/{print $2}' /proc/${PID[off]}/status)"

# ---- the requests: only those every proxy passes
H gen "$CORPUS" "$BODY_MIN" "$BODY_MAX" "$DIR/requests.json"
H check "$DIR/requests.json" "$DIR/cert.pem" "$DIR/statuses.json" \
  modsec=${PPORT[modsec]} off=${PPORT[off]} pl1=${PPORT[pl1]} pl2=${PPORT[pl2]}
H select "$DIR/requests.json" "$DIR/statuses.json" "$FILTER" "$LABELS" "$DIR/mix.lua"
case "$THINK" in
  random) { cat "$DIR/mix.lua"; echo "function delay() return math.random(0, 2 * $D) end"; } >"$DIR/half.lua" ;;
  fixed) { cat "$DIR/mix.lua"; echo "function delay() return $D end"; } >"$DIR/half.lua" ;;
esac

CLK=$(getconf CLK_TCK)
ticks() { local t=0 p v; for p in "$@"; do v=$(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'); t=$((t + v)); done; echo $t; }
url() { echo "https://127.0.0.1:${PPORT[$1]}/"; }
RESULTS=$DIR/results.txt; : >"$RESULTS"
full() { # name round
  local b a out
  b=$(ticks ${PP[$1]})
  out=$(${LOAD[@]+"${LOAD[@]}"} wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$DIR/mix.lua" "$(url "$1")")
  a=$(ticks ${PP[$1]})
  echo "full $1 $(H parse $((a - b)) "$DURATION" "$CLK" <<<"$out")" >>"$RESULTS"
}
half() { # name conns [rate] -> figures
  local out
  if [ -n "$RATE_WRK" ]; then
    out=$(${LOAD[@]+"${LOAD[@]}"} $RATE_WRK -t1 -c"$CONNS" -d"${DURATION}s" -R"${3:-$TARGET}" --latency -s "$DIR/mix.lua" "$(url "$1")")
  else
    out=$(${LOAD[@]+"${LOAD[@]}"} wrk -t1 -c"$2" -d"${DURATION}s" --latency -s "$DIR/half.lua" "$(url "$1")")
  fi
  H parse 0 "$DURATION" "$CLK" <<<"$out"
}
kib() { awk -v k="$1" '$1 == k":" {print $2}' "$2" 2>/dev/null || echo 0; }
mem() { # name -> "rss pss hwm" (MiB)
  local p rss=0 pss=0 hwm=0 v
  for p in ${PP[$1]}; do
    rss=$((rss + $(kib VmRSS /proc/$p/status))); hwm=$((hwm + $(kib VmHWM /proc/$p/status)))
    v=$(kib Pss /proc/$p/smaps_rollup); pss=$((pss + ${v:-0}))
  done
  python3 -c "print($rss/1024, $pss/1024, $hwm/1024)"
}

# ---- warm-up, then the memory of each proxy
for n in "${NAMES[@]}"; do
  ${LOAD[@]+"${LOAD[@]}"} wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$DIR/mix.lua" "$(url "$n")" >/dev/null
done
declare -A MEM
for n in "${NAMES[@]}"; do MEM[$n]=$(mem "$n"); done

# ---- full load, proxies alternating
for r in $(seq 1 "$ROUNDS"); do
  for n in "${NAMES[@]}"; do full "$n" "$r"; done
done

# ---- half of the gateway-without-inspection's peak rate
read -r off_rps off_p50 _ < <(python3 -c '
import sys,statistics
rows=[l.split() for l in open(sys.argv[1]) if l.startswith("full off ")]
print(statistics.median(float(r[2]) for r in rows), statistics.median(float(r[3]) for r in rows))' "$RESULTS")
# offer RATE: the load that offers RATE req/s, in LOAD_C and LOAD_DESC. With a
# wrk that has -R: CONNS connections at that rate; otherwise LOAD_C
# connections with a think time of D ms on average, calibrated once against
# the gateway without inspection, then the same for every proxy
offer() {
  LOAD_C=$CONNS
  if [ -z "$RATE_WRK" ]; then
    LOAD_C=$(python3 -c "import math; print(max(1, math.ceil($1 * ($D + $off_p50) / 1000)))")
    read -r h_rps _ < <(half off "$LOAD_C" "$1")
    LOAD_C=$(python3 -c "import math; print(max(1, math.ceil($LOAD_C * $1 / max($h_rps, 1))))")
    LOAD_DESC="target $1 req/s: $LOAD_C connections, think time $THINK, mean $D ms"
  else
    LOAD_DESC="constant rate $1 req/s ($RATE_WRK -R), $CONNS connections"
  fi
}
TARGET=$(python3 -c "print(max(1, int($off_rps / 2)))")
offer "$TARGET"
C=$LOAD_C HALF_DESC=$LOAD_DESC
for r in $(seq 1 "$ROUNDS"); do
  for n in "${NAMES[@]}"; do echo "half $n $(half "$n" "$C")" >>"$RESULTS"; done
done
# ---- half of the CRS PL1 gateway's own peak rate: what CRS adds to the
# latency of a gateway that is not saturated (the rate above saturates it
# whenever it serves less than half of the uninspected gateway's rate)
read -r pl1_rps < <(python3 -c '
import sys,statistics
print(statistics.median(float(l.split()[2]) for l in open(sys.argv[1]) if l.startswith("full pl1 ")))' "$RESULTS")
TARGET_OWN=$(python3 -c "print(max(1, int($pl1_rps / 2)))")
offer "$TARGET_OWN"
C_OWN=$LOAD_C OWN_DESC=$LOAD_DESC
for r in $(seq 1 "$ROUNDS"); do
  for n in off pl1; do echo "own $n $(half "$n" "$C_OWN" "$TARGET_OWN")" >>"$RESULTS"; done
done
for n in "${NAMES[@]}"; do
  read -r _ _ hwm <<<"$(mem "$n")"
  read -r rss pss _ <<<"${MEM[$n]}"
  echo "mem $n $rss $pss $hwm" >>"$RESULTS"
done
for n in off pl1 pl2; do kill -0 "${PID[$n]}" 2>/dev/null || die "$n exited during the run"; done

echo
H report "$RESULTS" "$LABELS" "$CONNS" "$HALF_DESC" "$ROUNDS" "$OWN_DESC"
