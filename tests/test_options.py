"""Configuration precedence: flag > environment > config file > default."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from batchtunnel.cli.event_loop import run as run_loop
from batchtunnel.cli.main import build_parser, main
from batchtunnel.cli.options import Option, add_options, load_file, read_secret, resolve
from batchtunnel.wire import ConfigurationError

from tests.support.processes import BIN

OPTIONS = [
    Option("listen", "address", str, "default:1"),
    Option("timeout", "seconds", float, 5.0),
    Option("insecure", "switch", flag=True),
    Option("allow-port", "ports", int, [], multiple=True),
]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser, OPTIONS)
    return parser.parse_args(argv)


def test_precedence_flag_env_file_default() -> None:
    file = {"agent": {"listen": "file:3", "timeout": 7, "insecure": True, "allow_port": [1, 2]}}
    env = {"BATCHTUNNEL_LISTEN": "env:2", "BATCHTUNNEL_ALLOW_PORT": "5,6"}
    values = resolve(OPTIONS, parse(["--listen", "flag:1"]), "agent", file, env)
    assert values == {"listen": "flag:1", "timeout": 7.0, "insecure": True, "allow_port": [5, 6]}
    values = resolve(OPTIONS, parse([]), "agent", file, env)
    assert values["listen"] == "env:2"
    values = resolve(OPTIONS, parse([]), "agent", {}, {})
    assert values == {"listen": "default:1", "timeout": 5.0, "insecure": None, "allow_port": []}


def test_bad_values_name_their_source() -> None:
    with pytest.raises(ConfigurationError, match="environment variable BATCHTUNNEL_TIMEOUT"):
        resolve(OPTIONS, parse([]), "agent", {}, {"BATCHTUNNEL_TIMEOUT": "soon"})
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) in \[agent\]: tiemout"):
        resolve(OPTIONS, parse([]), "agent", {"agent": {"tiemout": 1}}, {})


def test_config_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_file(str(bad))
    with pytest.raises(ConfigurationError, match="cannot read config file"):
        load_file(str(tmp_path / "missing.toml"))


def test_secrets_come_from_env_or_file_never_argv(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert read_secret("X_TOKEN", str(path), "token", {}) == "from-file"
    assert read_secret("X_TOKEN", str(path), "token", {"X_TOKEN": "from-env"}) == "from-env"
    with pytest.raises(ConfigurationError, match="set X_TOKEN"):
        read_secret("X_TOKEN", None, "token", {})
    for command in ("agent", "broker", "connect"):
        helptext = build_parser()._subparsers._group_actions[0].choices[command].format_help()  # type: ignore[union-attr]
        assert "--token " not in helptext and "--admin-token " not in helptext


def test_every_option_has_help() -> None:
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
    broker = parser._subparsers._group_actions[0].choices["broker"]  # type: ignore[union-attr]
    (mode,) = [a for a in broker._actions if "--api-socket-mode" in a.option_strings]
    assert mode.help is not None and mode.help.endswith("default: 600]")  # a file mode shown in octal


def test_cli_reports_configuration_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHTUNNEL_TOKEN", raising=False)
    assert main(["agent", "--url", "wss://example.org/agent"]) == 2
    assert "no tunnel token: set BATCHTUNNEL_TOKEN" in capsys.readouterr().err
    # A plain ws:// URL from the config file is refused without --insecure.
    config = tmp_path / "c.toml"
    config.write_text('[agent]\nurl = "ws://example.org/agent"\n')
    monkeypatch.setenv("BATCHTUNNEL_TOKEN", "tabc.def")
    assert main(["agent", "--config", str(config)]) == 2
    assert "TLS is required unless --insecure" in capsys.readouterr().err


def test_defaults_are_converted_like_given_values() -> None:
    from batchtunnel.cli import cmd_broker

    values = resolve(cmd_broker.OPTIONS, build_parser().parse_args(["broker"]), "broker", {}, {})
    assert values["listen"] == ("0.0.0.0", 8765)
    assert values["api_listen"] == ("127.0.0.1", 8766)
    assert values["hub_api"] is None


def test_a_missing_extra_is_named_in_one_line(tmp_path: Path) -> None:
    """A base install (websockets only) asked to run the broker: the extra to install, not a traceback."""
    shadow = tmp_path / "shadow" / "aiohttp"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'aiohttp'\", name='aiohttp')\n")
    done = subprocess.run([str(BIN / "batchtunnel"), "broker", "--insecure", "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(shadow.parent), "BATCHTUNNEL_ADMIN_TOKEN": "x" * 32})
    assert done.returncode == 2
    assert done.stderr.strip() == ("batchtunnel broker: error: this needs the 'broker' extra, which is not "
                                   "installed (no module 'aiohttp'): pip install 'batchtunnel[broker]'")


def test_the_event_loop_chosen_is_logged(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main(stop: asyncio.Event) -> str:
        return type(asyncio.get_running_loop()).__module__

    with caplog.at_level(logging.INFO):
        assert run_loop(main).startswith("uvloop")
    assert "event loop: uvloop" in caplog.text
    caplog.clear()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed
    with caplog.at_level(logging.INFO):
        assert run_loop(main) == "asyncio.unix_events"
    assert "event loop: asyncio, because uvloop is not installed (pip install 'batchtunnel[fast]')" in caplog.text
