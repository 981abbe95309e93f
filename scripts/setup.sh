#!/usr/bin/env bash
# Prepare a Debian machine (as root) to run batchtunnel from this checkout. Idempotent.
#   scripts/setup.sh [EXTRAS]     EXTRAS: pip extras to install, default "test,broker,fast"
# Environment: SETUP_APT="pkg ..." extra Debian packages; SETUP_CHP=1 also installs Node.js (if missing)
# and configurable-http-proxy into .node/ (its binary: .node/node_modules/.bin/configurable-http-proxy);
# SETUP_JOBENV=1 also builds .jobenv/, the batch jobs' Python environment: the system's /usr/bin/python3
# (readable by every user, unlike a Python under /root), batchtunnel and what a notebook job runs; and
# .jobenv-bare/, the same without batchtunnel (for batchtunnel-agent.pyz).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-test,broker,fast}

. scripts/apt.sh

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi
[ -n "${SETUP_APT:-}" ] && apt_install $SETUP_APT

if [ -n "${SETUP_CHP:-}" ]; then
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    if [ ! -x .node/node_modules/.bin/configurable-http-proxy ]; then
        echo "setup: npm install configurable-http-proxy"
        npm install --silent --no-fund --no-audit --prefix .node configurable-http-proxy@5.3.0 >/dev/null
    fi
fi

if [ -n "${SETUP_JOBENV:-}" ]; then
    [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3 python3-venv
    [ -x .jobenv/bin/python ] || /usr/bin/python3 -m venv .jobenv
    jobwant="$(sha256sum pyproject.toml | cut -c1-16) job+lab"
    if [ "$(cat .jobenv/.installed 2>/dev/null)" != "$jobwant" ]; then
        echo "setup: building .jobenv (the jobs' Python environment)"
        .jobenv/bin/python -m pip install -q --upgrade pip
        .jobenv/bin/python -m pip install -q -e . "jupyterhub==6.1.1" "batchspawner==1.3.0" jupyter_server \
            jupyterlab ipykernel requests
        # No "get notified about Jupyter news" popup covering the page (and no request leaving the node).
        mkdir -p .jobenv/share/jupyter/lab/settings
        echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
            > .jobenv/share/jupyter/lab/settings/overrides.json
        echo "$jobwant" > .jobenv/.installed
    fi
    # The editable install imports batchtunnel from this tree, whose __pycache__ the jobs' users cannot
    # write: compile it here, as pip does for a regular install, or every job compiles what it imports
    # (a cost a site's agent does not pay). Only stale files are rewritten.
    .jobenv/bin/python -m compileall -q __init__.py agent broker certs cli client session spawner status wire \
        >/dev/null
    chmod -R a+rX .jobenv
    # .jobenv-bare: a job environment with the notebook and no batchtunnel at all, for the one-file
    # agent (batchtunnel-agent.pyz) that the node's own Python runs.
    [ -x .jobenv-bare/bin/python ] || /usr/bin/python3 -m venv .jobenv-bare
    barewant="jupyterhub==6.1.1 batchspawner==1.3.0 jupyter_server ipykernel"
    if [ "$(cat .jobenv-bare/.installed 2>/dev/null)" != "$barewant" ]; then
        echo "setup: building .jobenv-bare (a job environment without batchtunnel)"
        .jobenv-bare/bin/python -m pip install -q --upgrade pip
        .jobenv-bare/bin/python -m pip install -q $barewant
        echo "$barewant" > .jobenv-bare/.installed
    fi
    chmod -R a+rX .jobenv-bare
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.batchtunnel-installed
want="$(sha256sum pyproject.toml | cut -c1-16) $extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[$extras]"
    echo "$want" > "$stamp"
fi
