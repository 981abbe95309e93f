#!/usr/bin/env bash
# mypy --strict on every package of batchtunnel.
# The repository root is the package batchtunnel (pyproject.toml: package-dir), so mypy needs to see the
# checkout under that name: .typecheck/batchtunnel is one link to the root, whatever the clone is called.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .typecheck
ln -sfn .. .typecheck/batchtunnel
packages=()
for d in wire session broker agent client certs cli spawner status; do packages+=(-p "batchtunnel.$d"); done
MYPYPATH=.typecheck exec "$PY" -m mypy --config-file pyproject.toml -m batchtunnel "${packages[@]}"
