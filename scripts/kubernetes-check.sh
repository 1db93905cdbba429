#!/usr/bin/env bash
# The Kubernetes manifests (issue #18): render every overlay and example of
# deploy/kubernetes with `kubectl kustomize`, validate each object against the
# Kubernetes schemas (kubernetes-validate --strict) and scan it with checkov
# (every failed check fails; skips are annotated with their reason in the
# manifests), and show checkov refuses a bad manifest.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubectl >/dev/null || { echo "kubernetes-check: kubectl is required (kubectl kustomize)" >&2; exit 1; }
# shellcheck source=scripts/lint-tools.sh
. scripts/lint-tools.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
scan() { "$venv/bin/checkov" -f "$1" --framework kubernetes --skip-download --compact --quiet; }
for overlay in deploy/kubernetes/overlays/*/ deploy/kubernetes/examples/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" > "$out/$name.yaml"
  echo "==> $name: $(grep -c '^kind:' "$out/$name.yaml") objects"
  "$venv/bin/kubernetes-validate" --strict --quiet "$out/$name.yaml"
  scan "$out/$name.yaml"
done
# the gate can fail: a privileged root container without limits or probes
cat > "$out/bad.yaml" <<'BAD'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad
spec:
  selector:
    matchLabels: {app: bad}
  template:
    metadata:
      labels: {app: bad}
    spec:
      containers:
        - name: bad
          image: palisade:latest
          securityContext:
            privileged: true
BAD
if scan "$out/bad.yaml" >/dev/null 2>&1; then
  echo "kubernetes-check: checkov accepted a manifest it must refuse" >&2
  exit 1
fi
echo "kubernetes-check: OK (every overlay valid, 0 failed checks; a bad manifest is refused)"
