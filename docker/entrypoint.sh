#!/bin/sh
# The compose demo's entrypoint: one role per service (docker-compose.yml gives it as the command).
#
#   init       once, before the others: the secrets (proxy and admin tokens, the demo password, the
#              munge key, the broker's CA and certificate), each into the volume of those who need it
#   proxy      configurable-http-proxy (its own service: a hub restart drops no connection)
#   hub        munged (sbatch authenticates with munge), then JupyterHub
#   broker     the batchtunnel broker: agents on :8765 (TLS), admin API on :8766
#   slurmctld  munged, then the Slurm controller
#   node       the node's firewall, munged, then slurmd: a compute node that accepts no inbound
#              connection except slurmd's port from slurmctld
set -eu

log() { echo "demo-entrypoint ($ROLE): $*" >&2; }

wait_for_file() {  # wait_for_file PATH: the init service writes it; give up after 120 s
    i=0
    while [ ! -s "$1" ]; do
        i=$((i + 1))
        if [ "$i" -gt 1200 ]; then log "gave up waiting for $1 (did the init service run?)"; exit 1; fi
        sleep 0.1
    done
}

secret() {  # secret FILE [CALL]: create FILE (mode 0600) holding secrets.CALL (token_hex(32)), unless it exists
    [ -s "$1" ] || (umask 077 && python3 -c "import secrets; print(secrets.${2:-token_hex(32)})" > "$1")
}

start_munge() {  # the key from the munge volume; munged as the munge user, in the background
    wait_for_file /munge/munge.key
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    install -o munge -g munge -m 0400 /munge/munge.key /etc/munge/munge.key
    setpriv --reuid=munge --regid=munge --init-groups munged --force
    i=0
    until munge -n > /dev/null 2>&1; do
        i=$((i + 1)); [ "$i" -le 100 ] || { log "munged did not start"; exit 1; }
        sleep 0.1
    done
}

ROLE=${1:?usage: demo-entrypoint init|proxy|hub|broker|slurmctld|node}
shift
case "$ROLE" in
init)
    # /hub-secrets: hub and proxy. /broker-secrets: the broker. /munge: every Slurm participant.
    secret /hub-secrets/proxy.token
    secret /broker-secrets/admin.token
    cp /broker-secrets/admin.token /hub-secrets/admin.token
    # The users' shared password, and the admin's own (JupyterHub wants 32 characters or more).
    secret /hub-secrets/password "token_urlsafe(9)"
    secret /hub-secrets/admin-password "token_urlsafe(24)"
    [ -s /munge/munge.key ] || (umask 077 && head -c 1024 /dev/urandom > /munge/munge.key)
    if [ ! -s /broker-secrets/pki/broker.pem ]; then
        batchtunnel certs init --dir /broker-secrets/pki --hostname broker > /dev/null
    fi
    cp /broker-secrets/pki/ca.pem /hub-secrets/ca.pem
    chmod 0644 /hub-secrets/ca.pem
    log "secrets ready"
    ;;
proxy)
    wait_for_file /secrets/proxy.token
    CONFIGPROXY_AUTH_TOKEN=$(cat /secrets/proxy.token)
    export CONFIGPROXY_AUTH_TOKEN
    exec configurable-http-proxy --ip 0.0.0.0 --port 8000 --api-ip 0.0.0.0 --api-port 8001 \
        --default-target http://hub:8081 --error-target http://hub:8081/hub/error "$@"
    ;;
hub)
    for f in proxy.token admin.token password admin-password ca.pem; do wait_for_file "/secrets/$f"; done
    start_munge
    exec jupyterhub -f /etc/jupyterhub/jupyterhub_config.py "$@"
    ;;
broker)
    wait_for_file /secrets/pki/broker.pem
    # Exposures listen on every address of this container; the nodes' firewall lets them reach
    # only the agent port (8765), and the proxy reaches an exposure as broker:PORT.
    exec batchtunnel broker --listen 0.0.0.0:8765 --api-listen 0.0.0.0:8766 --expose-host 0.0.0.0 \
        --cert /secrets/pki/broker.pem --key /secrets/pki/broker-key.pem \
        --admin-token-file /secrets/admin.token --database /var/lib/batchtunnel/broker.sqlite \
        --hub-api hub:8081 "$@"
    ;;
slurmctld)
    start_munge
    install -d -m 0755 /var/spool/slurmctld
    exec slurmctld -D -i "$@"
    ;;
node)
    # The firewall: nothing comes in but slurmd's port from slurmctld, and nothing goes out but
    # slurmctld's port, the broker's agent port and DNS. Root in this container sets it; the jobs
    # run as the demo users and cannot change it. Only this table is replaced: Docker keeps its
    # embedded DNS's rules in this namespace too. The peers' addresses are sets, kept current by
    # a loop below: a restarted container may come back with another address.
    dns=$(awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf)
    nft -f - <<NFT
table inet batchtunnel_node
delete table inet batchtunnel_node
table inet batchtunnel_node {
    set slurmctld { type ipv4_addr; }
    set broker { type ipv4_addr; }
    chain input {
        type filter hook input priority 0; policy drop;
        iif lo accept
        ct state established,related accept
        ip saddr @slurmctld tcp dport 6818 accept
    }
    chain output {
        type filter hook output priority 0; policy drop;
        oif lo accept
        ct state established,related accept
        ip daddr @slurmctld tcp dport 6817 accept
        ip daddr @broker tcp dport 8765 accept
        ip daddr $dns udp dport 53 accept
        ip daddr $dns tcp dport 53 accept
    }
}
NFT
    refresh() {  # refresh SET NAME: the set holds NAME's current addresses; prints them when they change
        addrs=$(getent ahostsv4 "$2" | awk '{print $1}' | sort -u | paste -sd, -)
        [ -n "$addrs" ] || return 0
        eval "old=\${last_$1:-}"
        [ "$addrs" = "$old" ] && return 0
        nft flush set inet batchtunnel_node "$1" && nft add element inet batchtunnel_node "$1" "{ $addrs }"
        eval "last_$1=\$addrs"
        log "firewall: $2 is $addrs"
    }
    i=0
    until refresh slurmctld slurmctld && refresh broker broker && [ -n "${last_slurmctld:-}" ] && [ -n "${last_broker:-}" ]; do
        i=$((i + 1)); [ "$i" -le 600 ] || { log "cannot resolve slurmctld or broker"; exit 1; }
        sleep 0.1
    done
    log "firewall: in only slurmctld -> :6818; out only slurmctld :6817, broker :8765, DNS ($dns)"
    (while sleep 2; do refresh slurmctld slurmctld; refresh broker broker; done) &
    start_munge
    install -d -m 0755 /var/spool/slurmd
    exec slurmd -D "$@"
    ;;
*)
    log "unknown role"; exit 2 ;;
esac
