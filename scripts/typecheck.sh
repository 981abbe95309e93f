#!/usr/bin/env bash
# mypy --strict on wire/, session/, broker/, agent/, certs/ and cli/, as installed: batchtunnel.*
# mypy cannot follow setuptools' editable-install import hook, so give it a tree of symlinks
# shaped like the installed package (.typecheck/batchtunnel/{wire,...} -> ../../wire, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .typecheck && mkdir -p .typecheck/batchtunnel
for f in cli/*.py cli/py.typed; do ln -s "../../$f" ".typecheck/batchtunnel/$(basename "$f")"; done
for d in wire session broker agent certs spawner; do ln -s "../../$d" ".typecheck/batchtunnel/$d"; done
cd .typecheck
exec "$OLDPWD/$PY" -m mypy --config-file ../pyproject.toml \
    -p batchtunnel.wire -p batchtunnel.session -p batchtunnel.broker -p batchtunnel.agent \
    -p batchtunnel.certs -m batchtunnel -m batchtunnel.main -m batchtunnel.options \
    -m batchtunnel.event_loop -m batchtunnel.cmd_broker -m batchtunnel.cmd_agent \
    -m batchtunnel.cmd_connect -m batchtunnel.cmd_tunnels -m batchtunnel.cmd_certs
