# Helpers the test clusters' scripts share (sourced by scripts/slurm-cluster.sh and gridengine-cluster.sh,
# after they define log()).

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds, or say what timed out
    local secs=$1 what=$2; shift 2
    for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    log "timed out waiting for $what"; return 1
}

node_namespace() {  # node_namespace NS HUB_IF NODE_IF HUB_IP NODE_IP: a /30 veth pair, NODE_IF in NS (idempotent)
    local ns=$1 hub_if=$2 node_if=$3 hub_ip=$4 node_ip=$5
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "$hub_if" >/dev/null 2>&1; then
        ip link add "$hub_if" type veth peer name "$node_if" netns "$ns"
    fi
    ip addr replace "$hub_ip/30" dev "$hub_if"
    ip -n "$ns" addr replace "$node_ip/30" dev "$node_if"
    ip link set "$hub_if" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$node_if" up
}
