#!/usr/bin/env bash
# Every test: lint, the import structure, types, then pytest (wire properties, real processes, real TLS, jupyter_server).
# For a fresh Debian machine as root; installs what it needs and is idempotent.
#   scripts/test.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_APT="openssh-server openssh-client chromium nginx-light systemd tinyproxy" SETUP_CHP=1 SETUP_JOBENV=1 scripts/setup.sh test,broker,fast
echo "== ruff"
.venv/bin/ruff check .
echo "== imports (no cycle, layers kept)"
.venv/bin/python scripts/check_imports.py
echo "== mypy --strict"
scripts/typecheck.sh
echo "== docs (Sphinx, warnings as errors)"
scripts/docs.sh
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
