#!/usr/bin/env bash
# The demo: JupyterHub on a Slurm cluster whose compute node accepts no inbound connections.
#
#   scripts/demo.sh              bring it up (again: prints how to use the running demo)
#   scripts/demo.sh restart-hub  restart JupyterHub as systemd does (SIGTERM to the hub and every
#                                process it started, then start it again): running notebooks carry on
#   scripts/demo.sh down         stop everything it started
#
# Hub side (this machine, 10.213.7.1): configurable-http-proxy on http://127.0.0.1:8000 and JupyterHub
# as separate services (as sites run them: a hub restart drops no connection; cleanup_servers = False
# keeps the users' jobs through it), the broker (TLS) on 10.213.7.1:18765, slurmctld. Compute node btnode1: slurmd in network namespace
# "btnode" (10.213.7.2) behind a firewall that lets in only slurmctld. Notebooks run there as the demo
# users and are reached through the tunnel their job dials out. Needs root (a fresh Debian machine).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=$PWD/.demo
BT=.venv/bin/batchtunnel
HUB_SIDE=10.213.7.1
AGENT_PORT=18765 API_PORT=18766 HUB_PORT=8000 HUB_API_PORT=18081 PROXY_API_PORT=18001 STATUS_PORT=18082
USERS="demo1 demo2" ADMIN=demo1

stop_pid() {  # stop_pid NAME: SIGTERM its process group, wait, then SIGKILL
    local file=$STATE/$1.pid
    [ -f "$file" ] || return 0
    local pid; pid=$(cat "$file")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$file"
}

running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

tree() {  # tree PID: PID and every process below it
    echo "$1"
    local child
    for child in $(ps -o pid= --ppid "$1"); do tree "$child"; done
}

stop_hub_like_systemd() {  # KillMode=control-group: the hub and all it started (connect steps too)
    local file=$STATE/jupyterhub.pid
    [ -f "$file" ] || return 0
    local pids pid; pids=$(tree "$(cat "$file")")
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 100); do  # until every one of them is gone (TimeoutStopSec), then SIGKILL
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && break; pid=""; done
        [ -z "$pid" ] && break
        sleep 0.1
    done
    kill -KILL $pids 2>/dev/null || true
    rm -f "$file"
}

start_hub() {
    setsid .venv/bin/jupyterhub -f "$STATE/jupyterhub_config.py" \
        >> "$STATE/jupyterhub.log" 2>&1 < /dev/null & echo $! > "$STATE/jupyterhub.pid"
    wait_for 60 "JupyterHub" curl -sf "http://127.0.0.1:$HUB_PORT/hub/api/"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "demo: timed out waiting for $what; see $STATE/*.log" >&2; exit 1
}

if [ "${1:-up}" = "restart-hub" ]; then
    running jupyterhub || { echo "demo: not running (scripts/demo.sh starts it)" >&2; exit 1; }
    stop_hub_like_systemd
    start_hub
    echo "demo: JupyterHub restarted; running notebooks carried on (see $STATE/jupyterhub.log)"
    exit 0
fi

if [ "${1:-up}" = "down" ]; then
    if running jupyterhub; then  # cleanup_servers = False: the servers are stopped here, one by one
        auth="Authorization: token $(cat "$STATE/hub-admin.token")"
        for user in $USERS; do
            code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "$auth" \
                "http://127.0.0.1:$HUB_PORT/hub/api/users/$user/server" || true)
            [ "$code" = 202 ] || continue  # 204: stopped; 400/404: no server; 202: stopping, wait for it
            for _ in $(seq 600); do  # its job cancelled and its tunnel deleted; after 60 s go on anyway
                curl -sf -H "$auth" "http://127.0.0.1:$HUB_PORT/hub/api/users/$user" 2>/dev/null \
                    | .venv/bin/python -c 'import json, sys; sys.exit(1 if json.load(sys.stdin)["servers"] else 0)' \
                    2>/dev/null && break
                sleep 0.1
            done
        done
    fi
    stop_hub_like_systemd
    stop_pid proxy
    stop_pid broker
    scripts/slurm-cluster.sh down || true
    rm -rf "$STATE"
    echo "demo: stopped"
    exit 0
fi

SETUP_APT=curl SETUP_CHP=1 SETUP_JOBENV=1 scripts/setup.sh broker,fast,spawner
eval "$(scripts/slurm-cluster.sh up)"   # sets SLURM_CONF
export SLURM_CONF
mkdir -p "$STATE" && chmod 700 "$STATE"
for user in $USERS; do id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"; done
[ -f "$STATE/password" ] || (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(9))' > "$STATE/password")
# The admin logs in with a password of its own (JupyterHub wants 32 characters or more for it).
[ -f "$STATE/admin-password" ] || (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))' > "$STATE/admin-password")
for secret in proxy.token hub-admin.token; do
    [ -f "$STATE/$secret" ] || (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_hex(32))' > "$STATE/$secret")
done
[ -f "$STATE/pki/ca.pem" ] || $BT certs init --dir "$STATE/pki" --hostname localhost --ip "$HUB_SIDE" >/dev/null

if ! running broker; then
    setsid $BT broker --listen "$HUB_SIDE:$AGENT_PORT" --api-listen "127.0.0.1:$API_PORT" \
        --cert "$STATE/pki/broker.pem" --key "$STATE/pki/broker-key.pem" \
        --admin-token-file "$STATE/admin.token" --database "$STATE/broker.sqlite" \
        --hub-api "$HUB_SIDE:$HUB_API_PORT" > "$STATE/broker.log" 2>&1 < /dev/null & echo $! > "$STATE/broker.pid"
    wait_for 20 "the broker" curl -sf "http://127.0.0.1:$API_PORT/health"
fi

if ! running jupyterhub; then
    cat > "$STATE/jupyterhub_config.py" <<CONFIG
c = get_config()  # noqa
c.JupyterHub.bind_url = "http://127.0.0.1:$HUB_PORT"
c.JupyterHub.hub_ip = "$HUB_SIDE"
c.JupyterHub.hub_port = $HUB_API_PORT
# The proxy is a service of its own (started below), so a hub restart drops no connection through it,
# and the users' servers outlive the hub process: restarting the hub must not stop them.
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:$PROXY_API_PORT"
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.auth_token = open("$STATE/proxy.token").read().strip()
c.JupyterHub.cleanup_servers = False
# Lets "scripts/demo.sh down" stop the users' servers.
c.JupyterHub.services = [{"name": "demo-admin", "api_token": open("$STATE/hub-admin.token").read().strip()}]
c.JupyterHub.load_roles = [{"name": "demo-admin", "services": ["demo-admin"],
                            "scopes": ["admin:servers", "read:users", "list:users"]}]
# The admin status page (Services menu): one row per tunnel. $ADMIN is the demo's admin.
from batchtunnel.status import status_service
service, role = status_service(broker_api_url="http://127.0.0.1:$API_PORT",
                               broker_admin_token_file="$STATE/admin.token", port=$STATUS_PORT)
c.JupyterHub.services.append(service)
c.JupyterHub.load_roles.append(role)
c.Authenticator.admin_users = {"$ADMIN"}
c.JupyterHub.db_url = "sqlite:///$STATE/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "$STATE/cookie_secret"
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = open("$STATE/password").read().strip()
c.SharedPasswordAuthenticator.admin_password = open("$STATE/admin-password").read().strip()
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "slurm-tunnel"
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "SLURM_CONF"]
c.Spawner.start_timeout = 180
c.SlurmTunnelSpawner.req_srun = ""
c.SlurmTunnelSpawner.broker_url = "wss://$HUB_SIDE:$AGENT_PORT/agent"
c.SlurmTunnelSpawner.broker_api_url = "http://127.0.0.1:$API_PORT"
c.SlurmTunnelSpawner.broker_admin_token_file = "$STATE/admin.token"
c.SlurmTunnelSpawner.broker_ca_file = "$STATE/pki/ca.pem"
# The jobs' own Python environment (readable by the users): agent, notebook, kernel.
c.SlurmTunnelSpawner.agent_cmd = ["$PWD/.jobenv/bin/batchtunnel", "agent"]
c.SlurmTunnelSpawner.batchspawner_singleuser_cmd = "$PWD/.jobenv/bin/batchspawner-singleuser"
c.SlurmTunnelSpawner.cmd = ["$PWD/.jobenv/bin/jupyterhub-singleuser"]
c.SlurmTunnelSpawner.options_cores_max = 2
c.SlurmTunnelSpawner.options_memory_max_gb = 2
c.SlurmTunnelSpawner.options_runtime_max_minutes = 240
c.SlurmTunnelSpawner.options_partitions = ["debug"]
c.SlurmTunnelSpawner.options_environments = {"Python (job environment)": ""}
CONFIG
    if ! running proxy; then
        CONFIGPROXY_AUTH_TOKEN=$(cat "$STATE/proxy.token") setsid .node/node_modules/.bin/configurable-http-proxy \
            --ip 127.0.0.1 --port "$HUB_PORT" --api-ip 127.0.0.1 --api-port "$PROXY_API_PORT" \
            --default-target "http://$HUB_SIDE:$HUB_API_PORT" --error-target "http://$HUB_SIDE:$HUB_API_PORT/hub/error" \
            > "$STATE/proxy.log" 2>&1 < /dev/null & echo $! > "$STATE/proxy.pid"
        wait_for 20 "the proxy" curl -sf -H "Authorization: token $(cat "$STATE/proxy.token")" \
            "http://127.0.0.1:$PROXY_API_PORT/api/routes"
    fi
    start_hub
fi

cat <<MSG
batchtunnel demo is up: JupyterHub on a Slurm cluster whose compute node accepts no inbound connections.
  open        http://127.0.0.1:$HUB_PORT   (from elsewhere: ssh -L $HUB_PORT:127.0.0.1:$HUB_PORT <this machine>)
  log in as   $(echo $USERS | sed "s/$ADMIN //; s/ / or /")   password: $(cat "$STATE/password")
              $ADMIN (the admin)   password: $(cat "$STATE/admin-password")
  the node    btnode1 (10.213.7.2), firewall: scripts/slurm-cluster.sh status
  logs        $STATE/{jupyterhub,proxy,broker}.log, /var/lib/batchtunnel-cluster/slurm*.log
  status      http://127.0.0.1:$HUB_PORT/services/batchtunnel-status/   (as $ADMIN, the demo's admin)
  restart     scripts/demo.sh restart-hub   (as systemctl restart does it: notebooks carry on)
  stop        scripts/demo.sh down
MSG
