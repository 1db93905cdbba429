#!/usr/bin/env bash
# The benign corpus through nginx + ModSecurity 3 + OWASP CRS v4.28.0 (issue #15).
#
# Writes an nginx + ModSecurity configuration into a fresh temporary directory,
# starts an nginx of its own there (not the system one) on 127.0.0.1:$PORT, with
# ModSecurity in blocking mode running CRS from crs/ at paranoia level 1 (anomaly
# scoring defaults: inbound threshold 5) in front of an upstream on
# 127.0.0.1:$UPSTREAM_PORT that answers 200 to everything, replays
# crates/waf/tests/data/benign-corpus.jsonl through it with replay.py, and stops
# nginx. Anything but a 2xx is the WAF's answer.
#
# The ModSecurity setup is the engine's (crates/waf/src/crs.rs): the body
# processor rules 200000/200001/200006 and 200002/200003 of ModSecurity's
# recommended configuration, SecRuleEngine On, tx.blocking_paranoia_level, then
# crs-setup.conf.example and rules/*.conf in name order.
#
#   bash bench/waf-corpus/modsecurity.sh
#
# Environment: PORT (18080), UPSTREAM_PORT (18081), PARANOIA (1), CRS_DIR
# (crs/), CORPUS, OUT (results file; default in the temporary directory),
# ALLOWED_METHODS (unset: CRS's default "GET HEAD POST OPTIONS", under which
# rule 911100 refuses every PUT and PATCH; e.g. "GET HEAD POST OPTIONS PUT
# PATCH DELETE" sets tx.allowed_methods as CRS's rule 900200 example does).
# Debian or Ubuntu: installs nginx and libnginx-mod-http-modsecurity with apt
# when they are missing and it runs as root.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
CRS_DIR=${CRS_DIR:-$repo/crs}
CORPUS=${CORPUS:-$repo/crates/waf/tests/data/benign-corpus.jsonl}
PORT=${PORT:-18080}
UPSTREAM_PORT=${UPSTREAM_PORT:-18081}
PARANOIA=${PARANOIA:-1}
ALLOWED_METHODS=${ALLOWED_METHODS:-}
MODULE=/usr/lib/nginx/modules/ngx_http_modsecurity_module.so

die() { echo "modsecurity.sh: $*" >&2; exit 1; }
[[ $ALLOWED_METHODS =~ ^[A-Z\ ]*$ ]] || die "ALLOWED_METHODS: method names separated by spaces"
[[ $PARANOIA =~ ^[1-4]$ ]] || die "PARANOIA: 1 to 4"

# ---- packages
if ! command -v nginx >/dev/null || [ ! -f "$MODULE" ]; then
    [ "$(id -u)" = 0 ] || die "needs nginx and libnginx-mod-http-modsecurity (apt-get install, as root)"
    command -v apt-get >/dev/null || die "no apt-get: install nginx and the ModSecurity 3 nginx module by hand"
    echo "installing nginx and libnginx-mod-http-modsecurity..."
    apt-get update -qq
    # RUNLEVEL=1: without systemd, invoke-rc.d then does not start the system
    # nginx (with systemd the package starts it on port 80 as usual; the nginx
    # below is another one, on its own ports)
    RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        nginx libnginx-mod-http-modsecurity >/dev/null
fi
command -v python3 >/dev/null || die "needs python3"
[ -f "$CRS_DIR/crs-setup.conf.example" ] && [ -d "$CRS_DIR/rules" ] || die "no CRS in $CRS_DIR"
[ -f "$CORPUS" ] || die "no corpus at $CORPUS (python3 bench/waf-corpus/make_corpus.py writes it)"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PORT" "$UPSTREAM_PORT"; do
    ! port_busy "$p" || die "port $p on 127.0.0.1 is in use (set PORT / UPSTREAM_PORT)"
done

nginx_version=$(nginx -v 2>&1 | sed 's/^nginx version: //')
modsec_version=$(dpkg-query -W -f '${Version}' libmodsecurity3 2>/dev/null || echo unknown)
connector_version=$(grep -aoE 'ModSecurity-nginx v[0-9.]+' "$MODULE" | head -n1 || true)
crs_version=$(sed -nE 's/^SecComponentSignature "(.*)"/\1/p' "$CRS_DIR/rules/REQUEST-901-INITIALIZATION.conf")

# ---- configuration
work=$(mktemp -d "${TMPDIR:-/tmp}/palisade-modsec.XXXXXX")
mkdir -p "$work/logs" "$work/tmp"
OUT=${OUT:-$work/results.jsonl}

unicode_map=""
methods_line=""
[ -n "$ALLOWED_METHODS" ] && methods_line="SecAction \"id:900200,phase:1,pass,nolog,t:none,setvar:'tx.allowed_methods=$ALLOWED_METHODS'\""
[ -f /etc/nginx/unicode.mapping ] && unicode_map="SecUnicodeMapFile /etc/nginx/unicode.mapping 20127"

cat >"$work/modsecurity.conf" <<EOF
# Engine settings: ModSecurity's recommended modsecurity.conf, blocking mode,
# no response body inspection (the corpus measures requests).
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 131072
SecRequestBodyLimitAction Reject
SecRequestBodyJsonDepthLimit 1024
SecArgumentsLimit 10000
SecResponseBodyAccess Off
SecTmpDir $work/tmp
SecDataDir $work/tmp
SecArgumentSeparator &
SecCookieFormat 0
$unicode_map

# Audit log: every transaction, as JSON lines, for replay.py to read the
# rule ids from (also those that matched below the blocking threshold).
SecAuditEngine On
SecAuditLogParts ABHZ
SecAuditLogType Serial
SecAuditLogFormat JSON
SecAuditLog $work/logs/modsec_audit.json

# The engine rules (as crates/waf/src/crs.rs ENGINE_RULES): body processors by
# Content-Type, and refusing bodies that do not parse.
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "^application/[a-z0-9.-]+[+]json" "id:200006,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:400,msg:'Multipart request body failed strict validation.'"

# Paranoia level (CRS's 900000 in crs-setup.conf), then CRS as published.
SecAction "id:900000,phase:1,pass,nolog,t:none,setvar:tx.blocking_paranoia_level=$PARANOIA"
$methods_line
Include $CRS_DIR/crs-setup.conf.example
Include $CRS_DIR/rules/*.conf
EOF

user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;  # workers write the logs in $work"

cat >"$work/nginx.conf" <<EOF
$user_line
load_module $MODULE;
daemon off;
master_process on;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;

events { worker_connections 256; }

http {
    access_log $work/logs/access.log;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    client_max_body_size 16m;
    client_body_buffer_size 1m;

    # The WAF.
    server {
        listen 127.0.0.1:$PORT;
        server_name localhost;
        modsecurity on;
        modsecurity_rules_file $work/modsecurity.conf;
        modsecurity_transaction_id "\$request_id";
        add_header X-Request-Id \$request_id always;
        location / {
            proxy_pass http://127.0.0.1:$UPSTREAM_PORT;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }

    # The application: 200 to everything.
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        access_log off;
        location / {
            default_type application/json;
            return 200 '{"ok":true}\n';
        }
    }
}
EOF

# ---- run
nginx -t -q -p "$work" -c "$work/nginx.conf" -e "$work/logs/error.log" \
    || die "nginx -t failed (see $work/logs/error.log)"
nginx -p "$work" -c "$work/nginx.conf" -e "$work/logs/error.log" &
nginx_pid=$!
stop_nginx() {
    if kill -0 "$nginx_pid" 2>/dev/null; then
        kill -QUIT "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
}
trap stop_nginx EXIT

for _ in $(seq 1 100); do
    port_busy "$PORT" && break
    kill -0 "$nginx_pid" 2>/dev/null || die "nginx exited (see $work/logs/error.log)"
    sleep 0.1
done
port_busy "$PORT" || die "nginx does not listen on $PORT"

echo "nginx $nginx_version, libmodsecurity3 $modsec_version, $connector_version, $crs_version" \
     "(paranoia level $PARANOIA, blocking, inbound threshold 5)"
echo "allowed methods: ${ALLOWED_METHODS:-GET HEAD POST OPTIONS (CRS default)}"
echo "configuration and logs: $work"
echo
python3 "$here/replay.py" --base-url "http://127.0.0.1:$PORT" --corpus "$CORPUS" \
    --audit-log "$work/logs/modsec_audit.json" --out "$OUT" \
    --label "nginx + ModSecurity + CRS (PL$PARANOIA, block${ALLOWED_METHODS:+, allowed_methods=$ALLOWED_METHODS})"
