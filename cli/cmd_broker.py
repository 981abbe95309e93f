"""``batchtunnel broker``: run the broker next to the hub."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

from ..wire import ConfigurationError
from .options import Option, api_address, file_mode, host_port, positive, read_secret, seconds_or_off

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("batchtunnel.broker")

NAME = "broker"
HELP = "run the broker (agent endpoint, hub-side ports, admin API)"
DESCRIPTION = """\
Run the broker next to JupyterHub. Agents inside batch jobs dial its agent
endpoint (wss://HOST:PORT/agent); the admin API on loopback creates tunnels and
exposes them on hub-side ports.

The admin token comes from BATCHTUNNEL_ADMIN_TOKEN or --admin-token-file; if
that file does not exist yet, a new random token is written to it (mode 0600).
"""

OPTIONS = [
    Option("listen", "address of the agent endpoint, HOST:PORT", host_port, "0.0.0.0:8765", metavar="HOST:PORT"),
    Option("api-listen", "address of the admin API: HOST:PORT (keep it on loopback), or unix:PATH for a "
           "unix socket whose file mode (--api-socket-mode) says who may connect", api_address,
           "127.0.0.1:8766", metavar="HOST:PORT|unix:PATH"),
    Option("api-socket-mode", "file mode of the admin API's unix socket, octal (660: the broker's group too)",
           file_mode, 0o600, metavar="MODE"),
    Option("api-max-connections", "admin API connections open at once; more are closed as they arrive",
           int, 64),
    Option("api-timeout", "seconds an admin API connection may stay open, slow or idle", positive, 10.0),
    Option("api-access-log", "log one line per admin API request (client, request line, status, size, seconds; "
           "never a header, so never a token)", flag=True),
    Option("metrics-listen", "also serve /metrics, and nothing else, on HOST:PORT (or unix:PATH): for a "
           "Prometheus that must not reach the admin API; same connection bounds as the API", api_address,
           metavar="HOST:PORT|unix:PATH"),
    Option("cert", "PEM certificate (chain) for the agent endpoint's TLS", metavar="FILE"),
    Option("key", "PEM private key for --cert", metavar="FILE"),
    Option("insecure", "accept agents over plain ws:// without TLS (testing only)", flag=True),
    Option("admin-token-file", "file holding the admin API token; created if missing", metavar="FILE"),
    Option("database", "SQLite file keeping tunnels and exposures across restarts; ':memory:' keeps nothing",
           str, "batchtunnel-broker.sqlite", metavar="FILE"),
    Option("expose-host", "hub-side address that exposures may bind (repeatable); the first is the default",
           str, ["127.0.0.1"], multiple=True, metavar="ADDR"),
    Option("allow-privileged-ports", "let exposures bind hub-side ports below 1024 (refused by default: the "
           "broker often runs as root, and those ports belong to the host's services)", flag=True),
    Option("hub-api", "JupyterHub's API address, HOST:PORT (its hub_bind_url), for agents in single-outbound-"
           "port mode; unset: agents may open no streams", host_port, None, metavar="HOST:PORT"),
    Option("handshake-timeout", "seconds an agent has to complete the protocol handshake", positive, 10.0),
    Option("heartbeat-interval", "seconds between heartbeat PINGs to each agent", positive, 5.0),
    Option("heartbeat-timeout", "seconds of silence after which an agent's link is declared dead",
           positive, 15.0),
    Option("resume-grace", "seconds an agent whose link was lost has to come back and resume its session: "
           "its streams (hub-side connections) wait meanwhile; 0 resets them with the link",
           seconds_or_off, 60.0),
    Option("initial-window", "per-stream flow-control window at stream start, bytes", int, 256 * 1024),
    Option("max-window", "largest a stream's window may grow to, bytes", int, 16 * 1024 * 1024),
    Option("max-streams", "streams an agent may open towards the broker at once", int, 1024),
    Option("session-window", "most bytes the receive windows of one agent's streams may add up to: bounds "
           "the memory an agent can make the broker hold", int, 64 * 1024 * 1024),
    Option("max-unauthenticated", "connections that may wait at once between their accept and an answered "
           "upgrade; more are closed at the accept", int, 256),
    Option("auth-failure-limit", "failed authentications from one address within --auth-failure-window "
           "after which it is refused (429) for a while, doubling from 1 s; a success does not clear them",
           int, 10),
    Option("auth-failure-window", "seconds a failed authentication counts against its address", positive, 60.0),
    Option("auth-block-max", "the longest such refusal, seconds", positive, 60.0),
    Option("trusted-proxy", "address of a TLS-terminating reverse proxy in front of the agent endpoint "
           "(repeatable): its X-Forwarded-For names the agent; with --listen on loopback and no --cert, "
           "the endpoint speaks plain WebSocket to it", str, [], multiple=True, metavar="ADDR"),
    Option("event-loop", "auto (uvloop if installed), uvloop or asyncio", str, "auto"),
]


def admin_token(values: dict[str, Any]) -> str:
    path = values["admin_token_file"]
    if not os.environ.get("BATCHTUNNEL_ADMIN_TOKEN") and path and not os.path.exists(path):
        import secrets

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        log.info("wrote a new admin token to %s", path)
    return read_secret("BATCHTUNNEL_ADMIN_TOKEN", path, "admin token")


def run(values: dict[str, Any], args: argparse.Namespace) -> int:
    from ..broker import Broker, BrokerConfig  # aiohttp: only needed on the hub side
    from ..wire import Settings

    listen_host, listen_port = values["listen"]
    api_host, api_port = values["api_listen"]
    try:
        wire = Settings(initial_window=values["initial_window"], max_window=values["max_window"],
                        max_streams=values["max_streams"], session_window=values["session_window"],
                        software="batchtunnel-broker")
    except ConfigurationError as exc:
        raise ConfigurationError(f"window/stream options: {exc}") from None
    config = BrokerConfig(
        admin_token=admin_token(values),
        listen_host=listen_host, listen_port=listen_port, api_host=api_host, api_port=api_port,
        cert=values["cert"], key=values["key"], insecure=bool(values["insecure"]),
        api_max_connections=values["api_max_connections"], api_timeout=values["api_timeout"],
        api_socket_mode=values["api_socket_mode"], api_access_log=bool(values["api_access_log"]),
        metrics_host=(values["metrics_listen"] or ("", 0))[0], metrics_port=(values["metrics_listen"] or ("", 0))[1],
        database=values["database"], expose_hosts=values["expose_host"],
        allow_privileged_ports=bool(values["allow_privileged_ports"]),
        handshake_timeout=values["handshake_timeout"],
        heartbeat_interval=values["heartbeat_interval"], heartbeat_timeout=values["heartbeat_timeout"],
        hub_api=values["hub_api"], wire=wire, resume_grace=values["resume_grace"],
        max_unauthenticated=values["max_unauthenticated"], auth_failure_limit=values["auth_failure_limit"],
        auth_block_max=values["auth_block_max"], auth_failure_window=values["auth_failure_window"],
        trusted_proxies=values["trusted_proxy"],
    )

    raise_open_files_limit()

    async def main(stop: asyncio.Event) -> int:
        broker = Broker(config)
        try:
            await broker.start()
        except OSError as exc:
            log.error("cannot start: %s", exc)
            await broker.stop()
            return 1
        await stop.wait()
        log.info("shutting down")
        await broker.stop()
        return 0

    from .event_loop import run as run_loop  # asyncio: for this command only

    return run_loop(main, values["event_loop"])


def raise_open_files_limit() -> None:
    """Every agent and every hub-side connection holds a descriptor: take the hard limit, not the
    soft 1024 most systems start with."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
