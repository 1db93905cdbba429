#!/usr/bin/env bash
# Generates the files examples/gateway/gateway.toml refers to, beside this script:
#
#   certs/ca.pem, certs/ca.key          a throwaway CA (EC P-256, 30 days)
#   certs/server.pem, certs/server.key  the gateway's certificate: localhost, 127.0.0.1
#   certs/billing.pem, certs/billing.key  a client certificate with the SAN URI
#                                       spiffe://example.org/billing (for the mTLS route)
#   idp/signing.key                     the example identity provider's Ed25519 key
#   idp/jwks.json                       its public key as a JWKS (what the gateway reads)
#   secrets/apikey-pepper               the HMAC pepper of the API key store (32 random bytes, hex)
#
# Existing files are kept, so running it again changes nothing; delete certs/ idp/ secrets/
# to start over. Needs only the openssl command and coreutils.
#
#   ./setup.sh                          generate the files
#   ./setup.sh token SUB SCOPES [ROLES] [TTL_SECONDS]
#                                       print an EdDSA JWT from the example identity provider,
#                                       e.g. ./setup.sh token alice "orders:read orders:write" orders-admin
#
# Everything here is for trying the gateway on one machine. In production the certificates come
# from your CA, the JWKS from your identity provider (jwks_url), and the pepper from your secret store.
set -euo pipefail
cd "$(dirname "$0")"

command -v openssl >/dev/null || {
  echo "setup.sh needs the openssl command (Debian: apt-get install openssl)" >&2
  exit 1
}

ISSUER="https://idp.example.test"
AUDIENCE="orders-api"
KID="example-1"

# Run a command quietly; show its output only if it fails.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    echo "$out" >&2
    echo "setup.sh: failed: $*" >&2
    exit 1
  fi
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# sign_cert NAME SUBJECT EXTENSIONS: certs/NAME.{key,pem}, an EC P-256 key signed by the CA.
sign_cert() {
  local name=$1 subject=$2 ext=$3
  [ -s "certs/$name.pem" ] && return 0
  quiet openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "certs/$name.key" -out "certs/$name.csr" -subj "$subject"
  printf '%b\n' "$ext" > "certs/$name.ext"
  quiet openssl x509 -req -in "certs/$name.csr" -CA certs/ca.pem -CAkey certs/ca.key \
    -set_serial "0x$(openssl rand -hex 8)" -days 30 -sha256 \
    -extfile "certs/$name.ext" -out "certs/$name.pem"
  rm -f "certs/$name.csr" "certs/$name.ext"
}

setup() {
  umask 077
  mkdir -p certs idp secrets

  if [ ! -s certs/ca.pem ]; then
    quiet openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout certs/ca.key -out certs/ca.pem -days 30 -subj "/CN=Palisade example CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  fi
  sign_cert server "/CN=localhost" \
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1"
  sign_cert billing "/CN=billing" \
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://example.org/billing"

  if [ ! -s idp/signing.key ]; then
    quiet openssl genpkey -algorithm ed25519 -out idp/signing.key
  fi
  if [ ! -s idp/jwks.json ]; then
    # The last 32 bytes of the DER SubjectPublicKeyInfo are the raw Ed25519 public key.
    local x
    x=$(openssl pkey -in idp/signing.key -pubout -outform DER | tail -c 32 | b64url)
    printf '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"%s","kid":"%s","alg":"EdDSA","use":"sig"}]}\n' \
      "$x" "$KID" > idp/jwks.json
  fi

  if [ ! -s secrets/apikey-pepper ]; then
    openssl rand -hex 32 > secrets/apikey-pepper
  fi
  # Public material may be world-readable; keys and the pepper stay 0600.
  chmod 644 certs/ca.pem certs/server.pem certs/billing.pem idp/jwks.json
  echo "examples/gateway: certs/, idp/ and secrets/ are ready"
}

# token SUB SCOPES [ROLES] [TTL]: a compact JWS signed with idp/signing.key.
token() {
  local sub=${1:?usage: ./setup.sh token SUB SCOPES [ROLES] [TTL_SECONDS]} scopes=${2-} roles=${3-} ttl=${4:-3600}
  [ -s idp/signing.key ] || { echo "run ./setup.sh first" >&2; exit 1; }
  for v in "$sub" "$scopes" "$roles"; do
    [[ $v =~ ^[A-Za-z0-9._:@\ -]*$ ]] || { echo "token: use only letters, digits and ._:@- in SUB, SCOPES and ROLES" >&2; exit 1; }
  done
  [[ $ttl =~ ^[0-9]+$ ]] || { echo "token: TTL_SECONDS must be a number" >&2; exit 1; }
  local roles_json="" r now
  for r in $roles; do roles_json="$roles_json${roles_json:+,}\"$r\""; done
  now=$(date +%s)
  local header payload input sig
  header=$(printf '{"alg":"EdDSA","typ":"JWT","kid":"%s"}' "$KID" | b64url)
  payload=$(printf '{"iss":"%s","aud":"%s","sub":"%s","scope":"%s","roles":[%s],"iat":%d,"exp":%d}' \
    "$ISSUER" "$AUDIENCE" "$sub" "$scopes" "$roles_json" "$now" "$((now + ttl))" | b64url)
  input="$header.$payload"
  # pkeyutl signs Ed25519 in one shot, from a file
  TMP=$(mktemp)
  trap 'rm -f "$TMP"' EXIT
  printf '%s' "$input" > "$TMP"
  sig=$(openssl pkeyutl -sign -inkey idp/signing.key -rawin -in "$TMP" | b64url)
  printf '%s.%s\n' "$input" "$sig"
}

case "${1:-setup}" in
  setup) setup ;;
  token) shift; token "$@" ;;
  *) echo "usage: ./setup.sh | ./setup.sh token SUB SCOPES [ROLES] [TTL_SECONDS]" >&2; exit 2 ;;
esac
