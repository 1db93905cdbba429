#!/usr/bin/env bash
# The benign corpus through the Palisade gateway running OWASP CRS v4.28.0
# (issue #15), beside bench/waf-corpus/modsecurity.sh: same corpus, same
# client (replay.py), same kind of upstream (200 to everything).
#
# Writes a gateway configuration into a fresh temporary directory: a
# plaintext listener on 127.0.0.1:$PORT, one anonymous route for every path
# with crs = "block" at paranoia level $PARANOIA (or no CRS, CRS=off), the
# built-in Node.js checks (`inspection`, default "block") and, with OPENAPI,
# the API's OpenAPI document in block mode (the positive model: a request the
# document does not describe is refused, 400 request_not_described), in front
# of a Python upstream on 127.0.0.1:$UPSTREAM_PORT; replays the corpus; stops
# both. The gateway's security log (security.log, the reason of every
# refusal) is in the directory printed.
#
#   cargo build --release -p palisade-cli && bash bench/waf-corpus/palisade.sh
#   OPENAPI=bench/waf-corpus/corpus-openapi.yaml CRS=off bash bench/waf-corpus/palisade.sh
#
# Environment: PALISADE (the binary; default target/release/palisade, else
# target/debug/palisade), PORT (18090), UPSTREAM_PORT (18091), CRS (block |
# off; default block), PARANOIA (1), INSPECTION (block | detect | off),
# OPENAPI (an OpenAPI 3.0 or 3.1 document, JSON or YAML, for the route;
# unset: none; bench/waf-corpus/corpus-openapi.yaml describes the corpus's
# API), ALLOWED_METHODS (unset: the gateway's default, GET HEAD POST OPTIONS
# PUT PATCH DELETE), CORPUS, OUT.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
PALISADE=${PALISADE:-}
if [ -z "$PALISADE" ]; then
    PALISADE=$repo/target/release/palisade
    [ -x "$PALISADE" ] || PALISADE=$repo/target/debug/palisade
fi
CORPUS=${CORPUS:-$repo/crates/waf/tests/data/benign-corpus.jsonl}
PORT=${PORT:-18090}
UPSTREAM_PORT=${UPSTREAM_PORT:-18091}
PARANOIA=${PARANOIA:-1}
INSPECTION=${INSPECTION:-block}
CRS=${CRS:-block}
OPENAPI=${OPENAPI:-}
ALLOWED_METHODS=${ALLOWED_METHODS:-}

die() { echo "palisade.sh: $*" >&2; exit 1; }
[ -x "$PALISADE" ] || die "no palisade binary (cargo build --release -p palisade-cli, or set PALISADE)"
[[ $PARANOIA =~ ^[1-4]$ ]] || die "PARANOIA: 1 to 4"
[[ $INSPECTION =~ ^(block|detect|off)$ ]] || die "INSPECTION: block, detect or off"
[[ $CRS =~ ^(block|off)$ ]] || die "CRS: block or off"
if [ -n "$OPENAPI" ]; then
    [ -f "$OPENAPI" ] || die "OPENAPI: no file at $OPENAPI"
    # the configuration is written in another directory: an absolute path,
    # with nothing a TOML basic string would need escaped
    OPENAPI=$(cd "$(dirname "$OPENAPI")" && pwd)/$(basename "$OPENAPI")
    [[ $OPENAPI != *[\"\\]* ]] || die "OPENAPI: a path without \" or \\, please"
fi
[[ $ALLOWED_METHODS =~ ^[A-Z\ ]*$ ]] || die "ALLOWED_METHODS: method names separated by spaces"
[ -f "$CORPUS" ] || die "no corpus at $CORPUS (python3 bench/waf-corpus/make_corpus.py writes it)"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PORT" "$UPSTREAM_PORT"; do
    ! port_busy "$p" || die "port $p on 127.0.0.1 is in use (set PORT / UPSTREAM_PORT)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/palisade-waf.XXXXXX")
OUT=${OUT:-$work/results.jsonl}
methods=""
if [ -n "$ALLOWED_METHODS" ]; then
    methods="allowed_methods = [$(printf '"%s", ' $ALLOWED_METHODS | sed 's/, $//')]"
fi
crs="crs = \"block\"
crs_paranoia = $PARANOIA"
[ "$CRS" = block ] || crs='crs = "off"'
openapi=""
[ -z "$OPENAPI" ] || openapi="openapi = \"$OPENAPI\""
echo 'permit(principal, action, resource);' >"$work/policies.cedar"
cat >"$work/gateway.toml" <<EOT
[[listeners]]
name = "plain"
address = "127.0.0.1:$PORT"
protocol = "http"
dangerous_plaintext = true

[admin]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:$UPSTREAM_PORT"]

[authorization]
policy_file = "policies.cedar"

[waf]
crs_dir = "$repo/crs"
$methods

[[routes]]
name = "api"
path_prefix = "/"
upstream = "app"
anonymous = true
inspection = "$INSPECTION"
$crs
$openapi
EOT

# the application: 200 to everything
python3 - "$UPSTREAM_PORT" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = b'{"ok":true}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = answer
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
upstream_pid=$!
"$PALISADE" gateway --config "$work/gateway.toml" >"$work/security.log" 2>"$work/gateway.err" &
gateway_pid=$!
stop() {
    kill "$gateway_pid" "$upstream_pid" 2>/dev/null || true
    wait "$gateway_pid" "$upstream_pid" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 1 300); do
    port_busy "$PORT" && port_busy "$UPSTREAM_PORT" && break
    kill -0 "$gateway_pid" 2>/dev/null || die "the gateway exited (see $work/gateway.err)"
    sleep 0.1
done
port_busy "$PORT" || die "the gateway does not listen on $PORT"

if [ "$CRS" = block ]; then
    label="palisade gateway + CRS (PL$PARANOIA, block; inspection $INSPECTION)"
    echo "palisade gateway ($("$PALISADE" --version 2>/dev/null || echo palisade)), CRS from $repo/crs" \
         "(paranoia level $PARANOIA, block; built-in checks: $INSPECTION)"
else
    label="palisade gateway, no CRS (inspection $INSPECTION)"
    echo "palisade gateway ($("$PALISADE" --version 2>/dev/null || echo palisade)), CRS off" \
         "(built-in checks: $INSPECTION)"
fi
if [ -n "$OPENAPI" ]; then
    label="$label + OpenAPI ($(basename "$OPENAPI"), block)"
    echo "OpenAPI document (positive model, block): $OPENAPI"
fi
echo "allowed methods: ${ALLOWED_METHODS:-GET HEAD POST OPTIONS PUT PATCH DELETE, the gateway default}"
echo "configuration and logs: $work"
echo
python3 "$here/replay.py" --base-url "http://127.0.0.1:$PORT" --corpus "$CORPUS" \
    --palisade-log "$work/security.log" --out "$OUT" \
    --label "$label"
