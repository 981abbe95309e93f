"""``batchtunnel agent``: inside the batch job, dial out to the broker and serve the notebook."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

from .options import Option, port_number, positive, read_secret, seconds_or_off

if TYPE_CHECKING:
    import asyncio
    import socket
    import subprocess

    from ..agent.config import AgentConfig

log = logging.getLogger(__name__)

NAME = "agent"
HELP = "run the agent inside a batch job (dials out; optionally wraps a command)"
DESCRIPTION = """\
Dial out to the broker and serve the streams it opens by connecting to
127.0.0.1:<port> on this node (loopback only: the agent is never a proxy into
the cluster). Reconnects forever with exponential backoff and jitter.

The tunnel token comes from BATCHTUNNEL_TOKEN or --token-file, never from the
command line. The broker's CA may also come as PEM text in BATCHTUNNEL_CA_PEM
(the spawners pass it that way, so nodes need no copy of the file).

Nodes that reach the outside only through an HTTP proxy: the agent dials
through it (CONNECT), taken from https_proxy / no_proxy as curl and pip do,
or from --proxy.

With `-- COMMAND ...` the agent checks its options, starts COMMAND (before it
loads its own networking code, so the notebook starts sooner), forwards SIGTERM,
SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 to it, and exits with its exit status; 127
if COMMAND cannot start. If the agent itself fails, it stops COMMAND (nothing
could reach it) and exits 1.

Example:
  BATCHTUNNEL_TOKEN=... batchtunnel agent --url wss://hub.example.org:8765/agent \\
      --cafile ca.pem -- jupyterhub-singleuser --ip 127.0.0.1
"""

OPTIONS = [
    Option("url", "broker agent endpoint, wss://HOST:PORT/agent", metavar="URL"),
    Option("token-file", "file holding this tunnel's token (alternative to BATCHTUNNEL_TOKEN)", metavar="FILE"),
    Option("cafile", "PEM CA bundle to verify the broker's certificate (default: system CAs)", metavar="FILE"),
    Option("insecure", "allow a plain ws:// URL (testing only)", flag=True),
    Option("proxy", "HTTP proxy to dial the broker through (CONNECT): http://HOST:PORT, or none to ignore the "
           "environment; default: https_proxy, all_proxy and no_proxy, as curl reads them. Credentials "
           "(http://USER:PASSWORD@HOST:PORT) only in BATCHTUNNEL_PROXY or https_proxy, never on the command line",
           metavar="URL"),
    Option("check", "check DNS, TCP, TLS (CA or pin) and the token against the broker with these options, print "
           "one line saying what is wrong (or ok), exit 0 if all is well; a running agent is not disturbed",
           flag=True),
    Option("fingerprint", "pin the broker's certificate: sha256:AB:CD:... as `batchtunnel certs show` prints "
           "it for broker.pem (repeatable, e.g. old and new during a renewal); without --cafile the pin "
           "replaces CA verification", str, [], multiple=True, metavar="SHA256"),
    Option("allow-port", "node port the broker may reach (repeatable); none given: any loopback port",
           port_number, [], multiple=True, metavar="PORT"),
    Option("heartbeat-interval", "seconds between heartbeat PINGs", positive, 5.0),
    Option("heartbeat-timeout", "seconds of silence after which the link is declared dead and redialled",
           positive, 15.0),
    Option("resume-grace", "seconds the agent keeps a lost session's streams (connections to the notebook) "
           "while it redials, to resume them; 0 closes them with the link", seconds_or_off, 60.0),
    Option("connect-timeout", "seconds for one dial (TCP + TLS + WebSocket + handshake)", positive, 10.0),
    Option("backoff-initial", "first reconnect delay, seconds (doubles each failure, with jitter)",
           positive, 0.5),
    Option("backoff-max", "longest reconnect delay, seconds", positive, 30.0),
    Option("hub-api-via-tunnel", "single-outbound-port mode: the wrapped command reaches JupyterHub's API "
           "through the tunnel (its JUPYTERHUB_API_URL and JUPYTERHUB_ACTIVITY_URL are rewritten to a "
           "local port); the broker needs --hub-api", flag=True),
    Option("event-loop", "asyncio, uvloop, or auto (uvloop if installed); asyncio measured faster for the "
           "agent's bulk sending (docs/benchmarks.md)", str, "asyncio"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="optional: -- COMMAND [ARGS...] to run beside the agent")


def run(values: dict[str, Any], args: argparse.Namespace) -> int:
    # Light imports only until the command has started (agent/command.py): the notebook's start, the
    # longest phase of a spawn, should not wait for asyncio, TLS and websockets to load.
    from ..agent import command as job
    from ..agent.config import AgentConfig
    from ..wire import ConfigurationError

    if not values["url"]:
        raise ConfigurationError("--url is required (or BATCHTUNNEL_URL)")
    if args.proxy is not None and "@" in args.proxy:  # the value is not repeated: it holds a password
        raise ConfigurationError("--proxy: credentials on the command line would show in ps; give the proxy URL "
                                 "in BATCHTUNNEL_PROXY or https_proxy instead")
    token = read_secret("BATCHTUNNEL_TOKEN", values["token_file"], "tunnel token")
    os.environ.pop("BATCHTUNNEL_TOKEN", None)  # the wrapped command does not need it
    config = AgentConfig(
        url=values["url"], token=token, cafile=values["cafile"], cadata=os.environ.get("BATCHTUNNEL_CA_PEM"),
        insecure=bool(values["insecure"]), fingerprints=values["fingerprint"],
        allow_ports=values["allow_port"], heartbeat_interval=values["heartbeat_interval"],
        heartbeat_timeout=values["heartbeat_timeout"], connect_timeout=values["connect_timeout"],
        resume_grace=values["resume_grace"], proxy=values["proxy"] or "",
        backoff_initial=values["backoff_initial"], backoff_max=values["backoff_max"],
    )
    config.check()
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if values["check"]:
        return _check(config)

    hub_api = job.hub_api_listener() if values["hub_api_via_tunnel"] else None
    process = None
    if command:
        env = dict(os.environ)
        if hub_api is not None:
            env = job.through_tunnel(env, hub_api.getsockname()[1])
        try:
            process = job.start(command, env)
        except OSError as exc:
            log.error("cannot start %s: %s", command[0], exc.strerror or exc)
            return 127
    try:
        return _serve(config, values, process, hub_api)
    finally:
        if process is not None:  # the agent ended (an error, a missing module) before the command
            job.stop(process, "the agent ended")


def _check(config: AgentConfig) -> int:
    from ..agent.check import check
    from .event_loop import run as run_loop

    async def checking(stop: asyncio.Event) -> int:
        result = await check(config)
        print(result.line)
        return 0 if result.ok else 1

    return run_loop(checking, "asyncio")


def _serve(config: AgentConfig, values: dict[str, Any], process: subprocess.Popen[bytes] | None,
           hub_api: socket.socket | None) -> int:
    import asyncio

    from ..agent.dialer import Agent
    from ..agent.supervisor import run_with_command
    from .event_loop import run as run_loop

    async def main(stop: asyncio.Event) -> int:
        agent = Agent(config)
        if process is not None:
            return await run_with_command(agent, process, hub_api)
        if hub_api is not None:
            await agent.listen_hub_api(hub_api)
        task = asyncio.ensure_future(agent.run())  # owned here
        await stop.wait()
        agent.stop()
        await asyncio.gather(task, return_exceptions=True)
        return 0

    return run_loop(main, values["event_loop"])
