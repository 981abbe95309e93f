#!/usr/bin/env bash
# The demo, on one machine: broker (TLS) + agent wrapping a JupyterLab server + `batchtunnel connect`.
# The notebook listens only on 127.0.0.1:18888; you reach it through the tunnel on 127.0.0.1:18000.
# (The firewalled Slurm node version replaces this once the real-Slurm setup lands.)
#   scripts/demo.sh        bring it up (again: prints the URL of the running demo)
#   scripts/demo.sh down   stop everything it started
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.demo
BT=.venv/bin/batchtunnel
NOTEBOOK_PORT=18888 HUB_PORT=18000 AGENT_PORT=18765 API_PORT=18766

stop_all() {
    for name in connect agent broker; do
        if [ -f "$STATE/$name.pid" ]; then
            pid=$(cat "$STATE/$name.pid")
            kill -TERM -- "-$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL -- "-$pid" 2>/dev/null || true
            rm -f "$STATE/$name.pid"
        fi
    done
}

running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

wait_for() {  # wait_for DESCRIPTION SECONDS COMMAND...
    local what=$1 secs=$2; shift 2
    for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "demo: timed out waiting for $what; see $STATE/*.log" >&2; exit 1
}

if [ "${1:-up}" = "down" ]; then
    stop_all; rm -rf "$STATE"; echo "demo: stopped"; exit 0
fi

SETUP_APT=curl scripts/setup.sh broker,fast
[ -x .venv/bin/jupyter-lab ] || .venv/bin/python -m pip install -q jupyterlab
mkdir -p "$STATE" && chmod 700 "$STATE"

if ! running broker || ! running agent || ! running connect; then
    stop_all
    [ -f "$STATE/pki/ca.pem" ] || $BT certs init --dir "$STATE/pki" --hostname localhost --ip 127.0.0.1 >/dev/null
    [ -f "$STATE/jupyter.token" ] || (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_hex(16))' > "$STATE/jupyter.token")
    setsid $BT broker --listen 127.0.0.1:$AGENT_PORT --api-listen 127.0.0.1:$API_PORT \
        --cert "$STATE/pki/broker.pem" --key "$STATE/pki/broker-key.pem" \
        --admin-token-file "$STATE/admin.token" --database "$STATE/broker.sqlite" \
        > "$STATE/broker.log" 2>&1 & echo $! > "$STATE/broker.pid"
    export BATCHTUNNEL_API_URL=http://127.0.0.1:$API_PORT BATCHTUNNEL_ADMIN_TOKEN_FILE=$STATE/admin.token
    wait_for "the broker" 20 curl -sf "$BATCHTUNNEL_API_URL/health"
    [ -f "$STATE/tunnel.id" ] || $BT tunnels create --name demo --token-out "$STATE/agent.token" > "$STATE/tunnel.id"
    # What a batch job runs: the agent wrapping the notebook, secrets only in the environment and files.
    JUPYTER_TOKEN=$(cat "$STATE/jupyter.token") setsid $BT agent --url wss://localhost:$AGENT_PORT/agent \
        --cafile "$STATE/pki/ca.pem" --token-file "$STATE/agent.token" -- \
        .venv/bin/jupyter-lab --no-browser --allow-root --ServerApp.ip=127.0.0.1 \
        --ServerApp.port=$NOTEBOOK_PORT --ServerApp.root_dir="$PWD/$STATE" \
        > "$STATE/agent.log" 2>&1 & echo $! > "$STATE/agent.pid"
    # What the spawner runs on the hub side:
    setsid $BT connect --tunnel "$(cat "$STATE/tunnel.id")" --port $HUB_PORT --rport $NOTEBOOK_PORT \
        > "$STATE/connect.log" 2>&1 & echo $! > "$STATE/connect.pid"
    wait_for "the notebook through the tunnel" 60 curl -sf "http://127.0.0.1:$HUB_PORT/api/status?token=$(cat "$STATE/jupyter.token")"
fi
cat <<MSG
batchtunnel demo is up.
  JupyterLab through the tunnel:  http://127.0.0.1:$HUB_PORT/lab?token=$(cat "$STATE/jupyter.token")
  broker API:                     http://127.0.0.1:$API_PORT/health  (admin token in $STATE/admin.token)
  logs:                           $STATE/{broker,agent,connect}.log
  stop:                           scripts/demo.sh down
MSG
