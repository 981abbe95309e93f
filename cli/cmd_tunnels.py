"""``batchtunnel tunnels``: manage tunnels through the broker's admin API."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..wire import ConfigurationError
from .cmd_connect import API_OPTIONS, client

NAME = "tunnels"
HELP = "create, list, show or delete tunnels at the broker"
DESCRIPTION = """\
  batchtunnel tunnels create [--name NAME] [--expires-in SECONDS] --token-out FILE
                                      prints the id; token to FILE (0600)
  batchtunnel tunnels list
  batchtunnel tunnels show ID
  batchtunnel tunnels delete ID

The new tunnel's token is written only to --token-out (created 0600), never printed.
"""

OPTIONS = API_OPTIONS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["create", "list", "show", "delete"], help="what to do")
    parser.add_argument("id", nargs="?", help="tunnel id (show, delete)")
    parser.add_argument("--name", default="", help="create: a label for the tunnel (e.g. the user)")
    parser.add_argument("--token-out", metavar="FILE", help="create: file to write the new token to (0600)")
    parser.add_argument("--expires-in", type=float, metavar="SECONDS",
                        help="create: the token is refused, and its agent disconnected, after this many seconds")


def run(values: dict[str, Any], args: argparse.Namespace) -> int:
    from ..client import ApiError

    api = client(values)
    try:
        if args.action == "create":
            if not args.token_out:
                raise ConfigurationError("create needs --token-out FILE (the token is never printed)")
            # Open first: a token we cannot store would be lost for good.
            fd = os.open(args.token_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                try:
                    tunnel = api.create_tunnel(args.name, args.expires_in)
                except ApiError:
                    os.unlink(args.token_out)
                    raise
                f.write(tunnel["token"] + "\n")
            print(tunnel["id"])
        elif args.action == "list":
            _print(api.tunnels())
        else:
            if not args.id:
                raise ConfigurationError(f"{args.action} needs a tunnel id")
            if args.action == "show":
                _print(api.tunnel(args.id))
            else:
                api.delete_tunnel(args.id)
    except ApiError as exc:
        print(f"batchtunnel tunnels: {exc}", file=sys.stderr)
        return 1
    return 0


def _print(value: Any) -> None:
    import json  # here: `batchtunnel agent` imports this module too, and needs no json

    json.dump(value, sys.stdout, indent=2)
    print()
