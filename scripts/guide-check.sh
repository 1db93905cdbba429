#!/usr/bin/env bash
# Runs every ```sh block of a guide (default docs/guide-node.md), in order,
# as one bash script with `set -euo pipefail`, in examples/guide, with the
# palisade binary ($PALISADE_BIN, else target/debug/palisade) first on PATH
# and free ports in PALISADE_PORT, ORDERS_PORT, GATEWAY_PORT, ADMIN_PORT.
# Background processes the guide starts are stopped at the end; its work
# directory is removed when every command succeeded (kept for a look when
# one failed). Needs the SDK built and `npm ci` in examples/guide.
set -euo pipefail
cd "$(dirname "$0")/.."
guide=${1:-docs/guide-node.md}
bin=${PALISADE_BIN:-$PWD/target/debug/palisade}
[ -x "$bin" ] || { echo "guide-check: no palisade binary at $bin (set PALISADE_BIN)" >&2; exit 2; }
for tool in curl jq openssl node; do
  command -v "$tool" >/dev/null || { echo "guide-check: $tool is required" >&2; exit 2; }
done
script=$(mktemp)
trap 'rm -f "$script"' EXIT
{
  echo 'set -euo pipefail'
  echo 'trap '"'"'s=$?; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; exit $s'"'"' EXIT'
  python3 - "$guide" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.findall(r'^```sh\n(.*?)^```$', text, re.S | re.M)
if not blocks:
    sys.exit('guide-check: no sh blocks')
for i, b in enumerate(blocks, 1):
    print(f'echo "--- block {i}" >&2')
    print(b)
PY
} > "$script"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export PALISADE_PORT=$(free_port) ORDERS_PORT=$(free_port) GATEWAY_PORT=$(free_port) ADMIN_PORT=$(free_port)
cd examples/guide
PATH="$(dirname "$bin"):$PATH" bash ${GUIDE_TRACE:+-x} "$script"
rm -rf work
echo "guide-check: every command of $guide ran"
