#!/usr/bin/env bash
# The oldest Python Debian offers here, for testing batchtunnel-agent.pyz on it: Debian 11's python3.9
# (RHEL 9's system Python is 3.9 too), unpacked from its packages beside the system's, with websockets
# 15.0.1 (the last release for 3.9) to bundle. Idempotent; prints PYTHON39=... and WEBSOCKETS39=...
#   scripts/python39.sh
# Root only (it writes under /var/lib, readable by every user: the test jobs run it as theirs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh

STATE=${BT_PYTHON39_DIR:-/var/lib/batchtunnel-python39}
ROOT=$STATE/root
PY=$ROOT/usr/bin/python3.9
WS=$STATE/websockets-15.0.1
PACKAGES="python3.9-minimal libpython3.9-minimal libpython3.9-stdlib libssl1.1"

if ! "$PY" -c 'import ssl, hashlib, asyncio, zipimport' >/dev/null 2>&1; then
    apt_install patchelf
    echo "python39: unpacking $PACKAGES from Debian 11 (bullseye) into $ROOT" >&2
    mkdir -p "$STATE/apt/lists/partial" "$STATE/apt/cache/archives/partial" "$STATE/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main" \
        > "$STATE/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$STATE/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$STATE/apt/lists" -o "Dir::Cache=$STATE/apt/cache"
              -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update -qq
    (cd "$STATE/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" download -qq $PACKAGES)
    rm -rf "$ROOT" && mkdir -p "$ROOT"
    for deb in "$STATE"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
    # Its ssl and hashlib modules need OpenSSL 1.1, which only this tree has: point them at it.
    for module in "$ROOT"/usr/lib/python3.9/lib-dynload/_ssl.*.so "$ROOT"/usr/lib/python3.9/lib-dynload/_hashlib.*.so; do
        patchelf --set-rpath '$ORIGIN/../../x86_64-linux-gnu' "$module"
    done
    "$PY" -c 'import ssl, hashlib, asyncio, zipimport'
fi
if [ ! -f "$WS/websockets/__init__.py" ]; then
    # The project's own environment (scripts/setup.sh) has pip; a fresh system python3 may not.
    .venv/bin/python -m pip install -q --no-deps --root-user-action=ignore --target "$WS" "websockets==15.0.1"
fi
chmod -R a+rX "$STATE"
echo "PYTHON39=$PY"
echo "WEBSOCKETS39=$WS"
