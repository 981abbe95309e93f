#!/usr/bin/env bash
# A single-host Grid Engine cluster (Debian's gridengine 8.1.9) whose execution host accepts no inbound
# connections but the master's, as scripts/slurm-cluster.sh does for Slurm (tests, the two-cluster demo).
#
#   scripts/gridengine-cluster.sh up              start it (idempotent); prints SGE_ROOT=... SGE_CELL=...
#   scripts/gridengine-cluster.sh firewall [PORT...]
#                                                node: in only qmaster -> execd (tcp 6445); out only to
#                                                qmaster (6444) and PORT... on the master side
#   scripts/gridengine-cluster.sh login on|off   an sshd "login node" in the node's namespace (port 22)
#   scripts/gridengine-cluster.sh status | down
#
# The master side is the root network namespace (10.213.8.1, host name "btgemaster"): sge_qmaster and
# whatever the caller runs. The execution host "btge1" is sge_execd in network namespace "btge"
# (10.213.8.2, no default route). Grid Engine names hosts by their resolved names, so both daemons run
# in UTS namespaces of their own with those names, /etc/hosts gets the two names, and the cell's
# host_aliases maps this machine's own name (which resolves to loopback) to btgemaster. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh
. scripts/testnode.sh

NS=btge
NODE=btge1
MASTER=btgemaster
HUB_IF=bt-gehub0
NODE_IF=bt-genode0
HUB_IP=10.213.8.1
NODE_IP=10.213.8.2
RUN=/run/batchtunnel-ge
STATE=${BT_GE_DIR:-/var/lib/batchtunnel-ge}
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
COMMON=$SGE_ROOT/$SGE_CELL/common
QMASTER_PID=/var/spool/gridengine/qmaster/qmaster.pid
EXECD_PID=/var/spool/gridengine/execd/$NODE/execd.pid

log() { echo "gridengine-cluster: $*" >&2; }

alive() {  # alive PIDFILE NAME: the daemon of that pid file runs (not a zombie)
    local pid
    [ -s "$1" ] && pid=$(cat "$1") && [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] \
        && [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]
}

install_packages() {
    local missing=()
    for pkg in gridengine-master gridengine-exec gridengine-client nftables iproute2 util-linux sudo; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    for pkg in gridengine-common gridengine-client gridengine-master gridengine-exec; do
        printf '%s shared/gridengineconfig boolean true\n%s shared/gridenginecell string default\n%s shared/gridenginemaster string %s\n' \
            "$pkg" "$pkg" "$pkg" "$MASTER"
    done | debconf-set-selections
    # The packages would start qmaster in this namespace, under this machine's name: not now.
    local blocked=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && blocked=1
    fi
    apt_install "${missing[@]}"
    [ -n "$blocked" ] && rm -f /usr/sbin/policy-rc.d
    return 0
}

uts() {  # uts NAME HOSTNAME: a persistent UTS namespace (bind-mounted at $RUN/NAME.uts)
    mkdir -p "$RUN"
    if ! nsenter --uts="$RUN/$1.uts" true 2>/dev/null; then
        touch "$RUN/$1.uts"
        unshare --uts="$RUN/$1.uts" hostname "$2"
    fi
}

setup_network() {
    node_namespace "$NS" "$HUB_IF" "$NODE_IF" "$HUB_IP" "$NODE_IP"
    grep -q "^$HUB_IP[[:space:]]" /etc/hosts || echo "$HUB_IP $MASTER" >> /etc/hosts
    grep -q "^$NODE_IP[[:space:]]" /etc/hosts || echo "$NODE_IP $NODE" >> /etc/hosts
    uts master "$MASTER"
    uts node "$NODE"
}

firewall() {  # firewall [PORT...]: extra ports on the master side the node may dial (kept for `login`)
    mkdir -p "$RUN" && echo "$*" > "$RUN/firewall.ports"
    local ports="6444${*:+, }$(echo "$*" | sed 's/ /, /g')"
    ip netns exec "$NS" nft -f - <<NFT
flush ruleset
table inet btgefw {
    chain input {
        type filter hook input priority 0; policy drop;
        iif lo accept
        ct state established,related accept
        ip saddr $HUB_IP tcp dport { 6445${LOGIN_PORT:+, $LOGIN_PORT} } accept
    }
    chain output {
        type filter hook output priority 0; policy drop;
        oif lo accept
        ct state established,related accept
        ip daddr $HUB_IP tcp dport { $ports } accept
    }
}
NFT
    log "node firewall: in 6445${LOGIN_PORT:+ and $LOGIN_PORT (ssh)} from the master side; out $ports"
}

write_config() {
    install -d -m 0755 "$STATE"
    cat > "$STATE/exechost.conf" <<CONF
hostname              $NODE
load_scaling          NONE
complex_values        NONE
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
CONF
    printf 'group_name @allhosts\nhostlist %s\n' "$NODE" > "$STATE/allhosts.conf"
    cat > "$STATE/queue.conf" <<CONF
qname                 all.q
hostlist              @allhosts
seq_no                0
load_thresholds       np_load_avg=1.75
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               NONE
rerun                 FALSE
slots                 8
tmpdir                /tmp
shell                 /bin/bash
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
CONF
}

start() {
    # The machine's own name resolves to loopback, which Grid Engine calls "localhost": both are the master.
    printf '%s %s localhost\n' "$MASTER" "$(hostname)" > "$COMMON/host_aliases"
    echo "$MASTER" > "$COMMON/act_qmaster"
    chown sgeadmin:sgeadmin "$COMMON/host_aliases" "$COMMON/act_qmaster"
    if ! alive "$QMASTER_PID" sge_qmaster; then
        nsenter --uts="$RUN/master.uts" /usr/sbin/sge_qmaster
    fi
    wait_for 60 sge_qmaster qconf -sh
    qconf -sh | grep -qx "$MASTER" || qconf -ah "$MASTER" >/dev/null
    qconf -ss 2>/dev/null | grep -qx "$MASTER" || qconf -as "$MASTER" >/dev/null
    if qconf -se "$NODE" >/dev/null 2>&1; then qconf -Me "$STATE/exechost.conf"; else qconf -Ae "$STATE/exechost.conf"; fi >/dev/null
    if qconf -shgrp @allhosts >/dev/null 2>&1; then qconf -Mhgrp "$STATE/allhosts.conf"; else qconf -Ahgrp "$STATE/allhosts.conf"; fi >/dev/null
    if qconf -sq all.q >/dev/null 2>&1; then qconf -Mq "$STATE/queue.conf"; else qconf -Aq "$STATE/queue.conf"; fi >/dev/null
    # Schedule every second, not every 15 s: a notebook's start waits for it.
    qconf -ssconf | sed -e 's/^schedule_interval .*/schedule_interval 0:0:1/' -e 's/^flush_submit_sec .*/flush_submit_sec 1/' \
        -e 's/^flush_finish_sec .*/flush_finish_sec 1/' > "$STATE/sched.conf"
    qconf -Msconf "$STATE/sched.conf" >/dev/null
    # Write the accounting file every second, not every 15 s (flush_time): the spawner reads why a job
    # ended from qacct, and waits for the record at most 20 s (spawner/spawners.py ACCOUNTING_WAIT).
    mkdir -p "$STATE/conf"
    # (qconf shows long values on continuation lines: join them, then set the whole value.)
    qconf -sconf global | awk '/\\$/ { sub(/\\$/, ""); printf "%s", $0; next } { print }' \
        | sed -e '/^reporting_params/c\reporting_params accounting=true reporting=false flush_time=00:00:15 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:01' \
              -e '/^flush_time=/d' > "$STATE/conf/global"
    qconf -Mconf "$STATE/conf/global" >/dev/null
    if ! alive "$EXECD_PID" sge_execd; then
        nsenter --net="/run/netns/$NS" --uts="$RUN/node.uts" /usr/sbin/sge_execd
    fi
    wait_for 60 "execd on $NODE to report" queue_up
}

queue_up() {  # the queue instance on the node is not in state "u" (unknown: execd not heard from)
    qstat -f -q "all.q@$NODE" | awk -v q="all.q@$NODE" '$1 == q { ok = ($6 !~ /u/) } END { exit !ok }'
}

login() {  # login on|off: sshd in the node's namespace, the cluster's "login node" for ssh exec_prefix
    local pidfile=$RUN/sshd.pid
    if [ "$1" = on ]; then
        apt_install openssh-server
        [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A >/dev/null
        mkdir -p /run/sshd
        if ! alive "$pidfile" sshd; then
            nsenter --net="/run/netns/$NS" --uts="$RUN/node.uts" /usr/sbin/sshd -o "PidFile=$pidfile" \
                -o "ListenAddress=$NODE_IP" -o "AcceptEnv=BATCHTUNNEL_* JUPYTERHUB_* JPY_* SGE_*" \
                -o PasswordAuthentication=no -o PermitRootLogin=no > /dev/null 2>&1 < /dev/null  # not our stdout
        fi
        wait_for 10 "sshd on $NODE_IP:22" timeout 1 bash -c "exec 3<>/dev/tcp/$NODE_IP/22"
        qconf -ss 2>/dev/null | grep -qx "$NODE" || qconf -as "$NODE" >/dev/null  # jobs are submitted there
    elif alive "$pidfile" sshd; then
        kill "$(cat "$pidfile")"
    fi
}

stop_daemons() {
    if alive "$EXECD_PID" sge_execd; then
        qconf -kej "$NODE" >/dev/null 2>&1 || kill "$(cat "$EXECD_PID")"
        wait_for 30 "sge_execd to stop" bash -c "! { [ -s '$EXECD_PID' ] && kill -0 \$(cat '$EXECD_PID'); }" || true
    fi
    if alive "$QMASTER_PID" sge_qmaster; then
        qconf -km >/dev/null 2>&1 || kill "$(cat "$QMASTER_PID")"
        wait_for 30 "sge_qmaster to stop" bash -c "! { [ -s '$QMASTER_PID' ] && kill -0 \$(cat '$QMASTER_PID'); }" || true
    fi
}

down() {
    login off
    stop_daemons
    if [ -e "/run/netns/$NS" ]; then
        for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$NS"
    fi
    ip link del "$HUB_IF" 2>/dev/null || true
    for name in master node; do umount "$RUN/$name.uts" 2>/dev/null || true; rm -f "$RUN/$name.uts"; done
    log "down"
}

LOGIN_PORT=""
[ -s "$RUN/sshd.pid" ] && LOGIN_PORT=22

case "${1:-up}" in
    up)
        install_packages
        setup_network
        firewall
        write_config
        start
        log "up: execution host $NODE ($NODE_IP, namespace $NS) ready; master $MASTER ($HUB_IP)"
        echo "SGE_ROOT=$SGE_ROOT"
        echo "SGE_CELL=$SGE_CELL"
        ;;
    firewall) shift; firewall "$@" ;;
    login)  # the firewall first: sshd's port must be open before it is waited for
        LOGIN_PORT=$([ "${2:-on}" = on ] && echo 22 || true)
        # shellcheck disable=SC2046
        firewall $(cat "$RUN/firewall.ports" 2>/dev/null || true)
        login "${2:-on}" ;;
    status) qstat -f -u '*'; ip netns exec "$NS" nft list ruleset ;;
    down) down ;;
    *) echo "usage: $0 up | firewall [PORT...] | login on|off | status | down" >&2; exit 2 ;;
esac
