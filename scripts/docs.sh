#!/usr/bin/env bash
# Build the documentation site into docs/_build/html, warnings as errors (scripts/test.sh runs it).
# Needs the test extra (Sphinx, MyST, autodoc-traits): scripts/setup.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/_build
for command in broker agent connect tunnels certs; do
    echo "$ batchtunnel $command --help"
    COLUMNS=100 .venv/bin/batchtunnel "$command" --help
    echo
done > docs/_build/cli.txt
exec .venv/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
