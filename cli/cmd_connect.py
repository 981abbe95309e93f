"""``batchtunnel connect``: the spawner's connect-to-job command."""

from __future__ import annotations

import argparse
from typing import Any

from ..wire import ConfigurationError
from .options import Option, port_number, positive, read_secret

NAME = "connect"
HELP = "expose a tunnel on a hub-side port and stay in the foreground while it is healthy"
DESCRIPTION = """\
Ask the broker to expose tunnel ID on HOST:PORT (hub side) towards port RPORT on
the job's node, print HOST:PORT, then watch the tunnel. Exit status:

  0  stopped by SIGTERM/SIGINT (the exposure is removed, unless --keep-exposure)
  2  the broker refused (unknown tunnel, port taken, wrong admin token)
  3  the tunnel or its exposure was deleted
  4  the broker API was unreachable for longer than --grace
  5  the agent was disconnected for longer than --grace

Example (the tunnel spawners' default connect_to_job_cmd):
  batchtunnel connect --tunnel {tunnel_id} --port {port} --rport {rport} --keep-exposure
"""

API_OPTIONS = [
    Option("api-url", "the broker's admin API", str, "http://127.0.0.1:8766", metavar="URL"),
    Option("admin-token-file", "file holding the admin token (alternative to BATCHTUNNEL_ADMIN_TOKEN)",
           metavar="FILE"),
]

OPTIONS = [
    *API_OPTIONS,
    Option("tunnel", "the tunnel id", metavar="ID"),
    Option("port", "hub-side port to listen on; 0 picks a free one", port_number, 0),
    Option("rport", "the port on the job's node", port_number, metavar="RPORT"),
    Option("host", "hub-side address to listen on", str, "127.0.0.1", metavar="ADDR"),
    Option("grace", "seconds the agent (or the broker) may be unreachable before giving up", positive, 60.0),
    Option("poll-interval", "seconds between health checks", positive, 2.0),
    Option("keep-exposure", "on SIGTERM/SIGINT, leave the exposure at the broker (the spawner runs the "
           "command again on the same port after a hub restart, and deletes the tunnel when the server ends)",
           flag=True),
]


def client(values: dict[str, Any]) -> Any:
    from ..client import BrokerClient

    token = read_secret("BATCHTUNNEL_ADMIN_TOKEN", values["admin_token_file"], "admin token")
    return BrokerClient(values["api_url"], token)


def run(values: dict[str, Any], args: argparse.Namespace) -> int:
    from ..client import run_connect

    if not values["tunnel"]:
        raise ConfigurationError("--tunnel is required")
    if not values["rport"]:
        raise ConfigurationError("--rport is required: the notebook's port on the node")
    return run_connect(client(values), values["tunnel"], values["port"], values["rport"],
                       values["host"], values["grace"], values["poll_interval"],
                       keep_exposure=bool(values["keep_exposure"]))
