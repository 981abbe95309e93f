"""The ``batchtunnel`` command: one entry point, one subcommand per role.

    batchtunnel broker   ...           next to the hub
    batchtunnel agent    ... [-- CMD]  inside the batch job
    batchtunnel connect  ...           hub side: expose a tunnel on a local port, watch it
    batchtunnel tunnels  create|list|show|delete
    batchtunnel certs    init|show|renew

Every option also reads from BATCHTUNNEL_<OPTION> and from the TOML file given
by --config / BATCHTUNNEL_CONFIG (section named after the subcommand); flags win
over the environment, which wins over the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from .. import __version__
from ..wire import ConfigurationError
from . import cmd_agent, cmd_agent_pyz, cmd_broker, cmd_certs, cmd_connect, cmd_tunnels
from .options import add_options, load_file, resolve

COMMANDS: list[ModuleType] = [cmd_broker, cmd_agent, cmd_agent_pyz, cmd_connect, cmd_tunnels, cmd_certs]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# A module an optional part needs -> the extra that installs it (pyproject.toml).
EXTRAS = {"aiohttp": "broker", "cryptography": "broker", "prometheus_client": "broker", "uvloop": "fast"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, and
    ``exception`` when there is one. The messages are the text ones: they never hold a token."""

    def format(self, record: logging.LogRecord) -> str:
        import datetime  # here: the agent's start, before its command, does not wait for them
        import json

        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchtunnel",
        description="Reach notebooks on firewalled batch nodes through an outbound tunnel.",
        epilog="Options also come from BATCHTUNNEL_<OPTION> variables and the --config file "
               "(flags > environment > file > default).",
    )
    parser.add_argument("--version", action="version", version=f"batchtunnel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", metavar="FILE", default=os.environ.get("BATCHTUNNEL_CONFIG"),
                       help=f"TOML config file; section [{module.NAME}] [env BATCHTUNNEL_CONFIG]")
        p.add_argument("--log-format", default=os.environ.get("BATCHTUNNEL_LOG_FORMAT", "text"),
                       choices=["text", "json"],
                       help="text, or json: one JSON object per line (time, level, logger, message) for a log "
                            "collector [env BATCHTUNNEL_LOG_FORMAT; default: text]")
        p.add_argument("--log-level", default=os.environ.get("BATCHTUNNEL_LOG_LEVEL", "INFO"),
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="log verbosity [env BATCHTUNNEL_LOG_LEVEL; default: INFO]")
        add_options(p, module.OPTIONS)
        if hasattr(module, "configure"):
            module.configure(p)
        p.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    module: ModuleType = args.module
    try:
        values = resolve(module.OPTIONS, args, module.NAME, load_file(args.config))
        status: int = module.run(values, args)
    except ConfigurationError as exc:
        print(f"batchtunnel {module.NAME}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(f"batchtunnel {module.NAME}: error: this needs the '{extra}' extra, which is not installed "
              f"(no module {exc.name!r}): pip install 'batchtunnel[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
