#!/usr/bin/env bash
# Chart checks (`make chart-test`, part of `make test`): helm lint, helm
# template in several configurations and checks of the rendered manifests,
# in e2e/chart_check.py. helm comes from e2e/helm.sh; PyYAML from the
# machine's python3, else from a small venv in e2e/.tools/chart-venv.
# `--write-deploy` rewrites deploy/coffer.yaml from the chart instead
# (`make deploy-manifest`).
set -euo pipefail

PYYAML_VERSION=6.0.3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELM="$(bash "$ROOT/e2e/helm.sh")"

PY=python3
if ! "$PY" -c 'import yaml, tomllib' >/dev/null 2>&1; then
    VENV="$ROOT/e2e/.tools/chart-venv"
    if ! "$VENV/bin/python" -c 'import yaml' >/dev/null 2>&1; then
        echo "e2e/chart_test.sh: installing PyYAML==$PYYAML_VERSION into $VENV" >&2
        python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "PyYAML==$PYYAML_VERSION"
    fi
    PY="$VENV/bin/python"
fi

echo "e2e/chart_test.sh: $("$HELM" version --short)" >&2
exec "$PY" "$ROOT/e2e/chart_check.py" --helm "$HELM" --root "$ROOT" "$@"
