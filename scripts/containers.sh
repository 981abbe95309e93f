#!/usr/bin/env bash
# A Docker-compatible container engine on a Debian machine without Docker: podman, its API socket,
# and a locally built debian:bookworm-slim base image (for machines that cannot pull from a registry).
# Used by the compose test; users with Docker need none of this.
#
#   eval "$(scripts/containers.sh up)"    install, start the API socket; prints DOCKER_HOST=... and
#                                         CONTAINERS_CONF=... for docker-compose / the docker CLI
#   scripts/containers.sh down            stop the API socket (images stay, as a cache)
#
# Idempotent. Settings this machine needs (see ../shared/FACTS.md): the runc runtime (crun refuses the
# host's cgroup layout) and open-file limits within what root may set here.
set -euo pipefail
. "$(dirname "$0")/apt.sh"

STATE=${BT_CONTAINERS_DIR:-/var/lib/batchtunnel-containers}
SOCKET=$STATE/podman.sock
CONF=$STATE/containers.conf
BASE=docker.io/library/debian:bookworm-slim

log() { echo "containers: $*" >&2; }

install_packages() {
    apt_install podman docker-compose debootstrap runc netavark aardvark-dns fuse-overlayfs slirp4netns \
        uidmap catatonit iptables nftables curl
}

write_conf() {
    install -d -m 0755 "$STATE"
    local nofile nproc; nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
    [ "$nofile" = unlimited ] && nofile=1048576
    # runc is refused a process limit above 32768 here, whatever `ulimit -Hu` says.
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
    cat > "$CONF.new" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
CONF
    mv "$CONF.new" "$CONF"
}

api_up() { curl -sf --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }

# The service runs from $STATE: conmon, which it starts for every container, fails ("Failed to get
# working directory", and the container "write child: broken pipe") once the service's working
# directory is gone, as a test run's deleted checkout would be. One started elsewhere is replaced.
service_ok() {
    local pid
    api_up && pid=$(cat "$STATE/podman-service.pid" 2>/dev/null) && [ "$(readlink "/proc/$pid/cwd")" = "$STATE" ]
}

stop_api() {
    if [ -f "$STATE/podman-service.pid" ]; then
        kill "$(cat "$STATE/podman-service.pid")" 2>/dev/null || true
        rm -f "$STATE/podman-service.pid"
    fi
}

start_api() {
    if ! service_ok; then
        if api_up; then
            log "restarting podman's API service (its working directory is not $STATE)"
            stop_api
            for _ in $(seq 100); do api_up || break; sleep 0.1; done
        fi
        rm -f "$SOCKET"
        (cd "$STATE" && CONTAINERS_CONF=$CONF exec setsid podman system service --time=0 "unix://$SOCKET" \
            >> "$STATE/podman-service.log" 2>&1 < /dev/null) & echo $! > "$STATE/podman-service.pid"
        for _ in $(seq 100); do api_up && break; sleep 0.1; done
        api_up || { log "podman's API socket did not come up; see $STATE/podman-service.log"; exit 1; }
    fi
}

base_image() {  # debian:bookworm-slim, from this machine's Debian mirror, unless it can be pulled
    CONTAINERS_CONF=$CONF podman image exists "$BASE" && return 0
    if CONTAINERS_CONF=$CONF podman pull -q "$BASE" >/dev/null 2>&1; then return 0; fi
    local mirror
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    log "building $BASE with debootstrap from $mirror (about a minute)"
    local dir; dir=$(mktemp -d)
    trap 'rm -rf "$dir"' RETURN
    debootstrap --variant=minbase --include=ca-certificates bookworm "$dir" "$mirror" > "$STATE/debootstrap.log" 2>&1 \
        || { log "debootstrap failed; see $STATE/debootstrap.log"; exit 1; }
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin
    tar -C "$dir" --numeric-owner -c . | CONTAINERS_CONF=$CONF podman import -q - "$BASE" >/dev/null
}

case "${1:-up}" in
up)
    install_packages
    write_conf
    start_api
    base_image
    echo "DOCKER_HOST=unix://$SOCKET; export DOCKER_HOST; CONTAINERS_CONF=$CONF; export CONTAINERS_CONF"
    ;;
down)
    stop_api
    ;;
*)
    echo "usage: $0 up|down" >&2; exit 2 ;;
esac
