#!/usr/bin/env bash
# A single-host Slurm cluster whose compute node accepts no inbound connections (tests, CI, demo).
#
#   scripts/slurm-cluster.sh up                 start it (idempotent); prints SLURM_CONF=...
#   scripts/slurm-cluster.sh firewall default   node: inbound only slurmctld -> slurmd (tcp 6818)
#   scripts/slurm-cluster.sh firewall strict PORT...
#   scripts/slurm-cluster.sh firewall open      node: no filtering (bench/start_time.py's direct run)
#                                              also outbound only to slurmctld (6817) and PORT... on the hub
#   scripts/slurm-cluster.sh status | down
#
# The "hub side" is the root network namespace (10.213.7.1): munged, slurmctld, and whatever the caller
# runs (JupyterHub, broker). The compute node "btnode1" is slurmd inside network namespace "btnode"
# (10.213.7.2, no default route), so every job step runs behind its firewall. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh
. scripts/testnode.sh

STATE=${BT_CLUSTER_DIR:-/var/lib/batchtunnel-cluster}
NS=btnode
NODE=btnode1
HUB_IF=bt-hub0
NODE_IF=bt-node0
HUB_IP=10.213.7.1
NODE_IP=10.213.7.2
CONF=$STATE/slurm.conf

log() { echo "slurm-cluster: $*" >&2; }

install_packages() {
    apt_install slurmctld slurmd slurm-client munge nftables sudo iproute2 util-linux
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    fi
    if ! alive /run/munge/munged.pid; then
        # setpriv, not runuser: the PID file must name munged itself.
        # Its own output, not ours: a daemon holding our stdout would hang "$(slurm-cluster.sh up)".
        setpriv --reuid=munge --regid=munge --init-groups munged --force > /dev/null 2>&1 < /dev/null
    fi
    wait_for 10 munged munge -n
}

write_config() {
    install -d -m 0755 "$STATE" "$STATE/ctld" "$STATE/slurmd"
    cat > "$CONF" <<CONF
ClusterName=batchtunnel
SlurmctldHost=$(hostname -s)($HUB_IP)
MailProg=/bin/true
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$NODE NodeAddr=$NODE_IP CPUs=$(nproc) RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
CONF
}

firewall() {  # firewall default | strict PORT... | open
    local mode=$1; shift || true
    local output=""
    if [ "$mode" = open ]; then
        ip netns exec "$NS" nft flush ruleset
        log "node firewall: open (no filtering)"
        return
    fi
    if [ "$mode" = strict ]; then
        local ports="6817${*:+, }$(echo "$*" | tr ' ' ',' | sed 's/,/, /g')"
        output="chain output { type filter hook output priority 0; policy drop;
            oif lo accept; ct state established,related accept;
            ip daddr $HUB_IP tcp dport { $ports } accept; }"
    fi
    ip netns exec "$NS" nft -f - <<NFT
flush ruleset
table inet btfw {
    chain input {
        type filter hook input priority 0; policy drop;
        iif lo accept
        ct state established,related accept
        ip saddr $HUB_IP tcp dport 6818 accept
    }
    $output
}
NFT
    log "node firewall: $mode${*:+ (outbound to hub ports 6817 $*)}"
}

start_slurm() {
    if ! alive "$STATE/slurmctld.pid"; then
        setsid slurmctld -D -f "$CONF" >> "$STATE/slurmctld.out" 2>&1 < /dev/null &
    fi
    wait_for 30 slurmctld env SLURM_CONF="$CONF" scontrol ping
    if ! alive "$STATE/slurmd.pid"; then
        # nsenter, not "ip netns exec": the latter remounts /sys and slurmd 22.05 then dies.
        setsid nsenter --net="/run/netns/$NS" slurmd -D -N "$NODE" -f "$CONF" >> "$STATE/slurmd.out" 2>&1 < /dev/null &
    fi
    for _ in $(seq 300); do
        state=$(SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
        case "$state" in
            idle|mix|alloc) return 0 ;;
            down*|drain*) SLURM_CONF=$CONF scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.1
    done
    log "node $NODE never became idle (state: ${state:-none}); see $STATE/slurmd.log"
    return 1
}

down() {
    for name in slurmd slurmctld; do
        if alive "$STATE/$name.pid"; then
            kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
        fi
    done
    sleep 0.5
    # linuxproc tracks by parent: a double-forked job process escapes scancel; clear the namespace.
    if [ -e "/run/netns/$NS" ]; then
        for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$NS"
    fi
    for name in slurmd slurmctld; do
        if alive "$STATE/$name.pid"; then kill -9 "$(cat "$STATE/$name.pid")" 2>/dev/null || true; fi
        rm -f "$STATE/$name.pid"
    done
    rm -rf "$STATE/ctld"/* "$STATE/slurmd"/*
    log "down"
}

case "${1:-up}" in
    up)
        install_packages
        start_munge
        write_config
        node_namespace "$NS" "$HUB_IF" "$NODE_IF" "$HUB_IP" "$NODE_IP"
        firewall default
        start_slurm
        log "up: node $NODE ($NODE_IP, namespace $NS) idle; hub side $HUB_IP"
        echo "SLURM_CONF=$CONF"
        ;;
    firewall) shift; firewall "$@" ;;
    status)
        SLURM_CONF=$CONF sinfo; SLURM_CONF=$CONF squeue
        ip netns exec "$NS" nft list ruleset ;;
    down) down ;;
    *) echo "usage: $0 up | firewall default | firewall strict PORT... | firewall open | status | down" >&2; exit 2 ;;
esac
