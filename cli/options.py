"""Options for every subcommand, from flags, environment variables and a config file.

Precedence, highest first::

    --listen 0.0.0.0:8765            a flag on the command line
    BATCHTUNNEL_LISTEN=...           an environment variable (BATCHTUNNEL_ + option, upper case)
    [broker] listen = "..."          the TOML config file (--config or BATCHTUNNEL_CONFIG)
    default                          shown in --help

Secrets (tokens) are never options: they come from a file option or an
environment variable that --help names, so they never appear in ``ps``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..wire import ConfigurationError

ENV_PREFIX = "BATCHTUNNEL_"


@dataclass(frozen=True)
class Option:
    """One option: ``--name``, env ``BATCHTUNNEL_NAME``, file key ``name`` (dashes become underscores)."""

    name: str
    help: str
    type: Callable[[Any], Any] = str
    default: Any = None
    flag: bool = False      # a boolean switch
    multiple: bool = False  # may be given several times (env/file: comma-separated / list)
    metavar: str | None = None

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Add each option as a flag whose default is 'not given', so precedence can be resolved later."""
    for opt in options:
        shown = "off" if opt.flag and not opt.default else opt.default
        if opt.type is file_mode and isinstance(opt.default, int):
            shown = f"{opt.default:o}"  # 600, not 384
        if opt.multiple and not opt.default:
            shown = "none"
        help_text = f"{opt.help} [env {opt.env}; default: {shown}]"
        if opt.flag:
            parser.add_argument(f"--{opt.name}", dest=opt.key, action="store_const", const=True,
                                default=None, help=help_text)
        elif opt.multiple:
            parser.add_argument(f"--{opt.name}", dest=opt.key, action="append", type=opt.type,
                                default=None, help=help_text, metavar=opt.metavar)
        else:
            parser.add_argument(f"--{opt.name}", dest=opt.key, type=opt.type, default=None,
                                help=help_text, metavar=opt.metavar)


def _toml_parser() -> ModuleType | None:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # pragma: no cover
        import tomli  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # batchtunnel-agent.pyz on Python 3.9/3.10 carries no TOML parser
        return None
    return tomli  # type: ignore[no-any-return,unused-ignore]


def load_file(path: str | None) -> dict[str, Any]:
    """Read the TOML config file; {} when no file is configured."""
    if not path:
        return {}
    tomllib = _toml_parser()  # loaded only when there is a file: the agent's start does not wait for it
    if tomllib is None:  # pragma: no cover
        raise ConfigurationError("--config needs Python 3.11 or the tomli package: give flags or BATCHTUNNEL_* "
                                 "variables instead")
    try:
        with open(path, "rb") as f:
            loaded: dict[str, Any] = tomllib.load(f)
            return loaded
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None


def resolve(
    options: Sequence[Option],
    args: argparse.Namespace,
    section: str,
    file_config: dict[str, Any],
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return ``{key: value}`` for every option, applying flag > env > file > default."""
    environ = dict(os.environ) if environ is None else environ
    table = file_config.get(section, {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"config file: [{section}] must be a table")
    known = {opt.key for opt in options}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigurationError(
            f"config file: unknown option(s) in [{section}]: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for opt in options:
        given = getattr(args, opt.key, None)
        if given is not None:
            values[opt.key] = given
        elif opt.env in environ:
            values[opt.key] = _convert(opt, environ[opt.env], f"environment variable {opt.env}")
        elif opt.key in table:
            values[opt.key] = _convert(opt, table[opt.key], f"config file [{section}] {opt.key}")
        elif opt.multiple:
            values[opt.key] = list(opt.default or [])
        elif isinstance(opt.default, str) and opt.type is not str:
            values[opt.key] = opt.type(opt.default)  # e.g. "0.0.0.0:8765" -> ("0.0.0.0", 8765)
        else:
            values[opt.key] = opt.default
    return values


def _convert(opt: Option, raw: Any, where: str) -> Any:
    try:
        if opt.flag:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if opt.multiple:
            items = raw if isinstance(raw, list) else [p for p in str(raw).split(",") if p.strip()]
            return [opt.type(str(item).strip()) for item in items]
        return opt.type(raw if isinstance(raw, (int, float)) and opt.type is not str else str(raw))
    except (ValueError, TypeError, ConfigurationError) as exc:
        raise ConfigurationError(f"{where}: invalid value {raw!r} for --{opt.name} ({exc})") from None


def host_port(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6)."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def api_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, or ``unix:PATH`` for a unix socket (returned as ``("unix:PATH", 0)``)."""
    if str(text).startswith("unix:"):
        if not str(text)[5:].startswith("/"):
            raise ValueError(f"expected unix:/absolute/path, got {text!r}")
        return str(text), 0
    return host_port(text)


def file_mode(text: str) -> int:
    """An octal file mode such as ``660``."""
    value = int(str(text), 8)
    if not 0 <= value <= 0o777:
        raise ValueError(f"{text!r} is not a file mode")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is not a port")
    return value


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def seconds_or_off(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be 0 (off) or more")
    return value


def read_secret(env_name: str, file_path: str | None, what: str, environ: dict[str, str] | None = None) -> str:
    """A secret from its environment variable, else from a file; never from argv.

    Raises:
        ConfigurationError: neither is set, or the file cannot be read.
    """
    environ = dict(os.environ) if environ is None else environ
    if environ.get(env_name):
        return environ[env_name].strip()
    if file_path:
        try:
            with open(file_path, encoding="utf-8") as f:
                secret = f.read().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the {what} from {file_path}: {exc.strerror}") from None
        if not secret:
            raise ConfigurationError(f"the {what} file {file_path} is empty")
        return secret
    raise ConfigurationError(f"no {what}: set {env_name} or give its file option")
