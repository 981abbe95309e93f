"""The wire package loads its modules on first use (wire/__init__.py): what it names, it resolves."""

from __future__ import annotations

import importlib
import subprocess
import sys

import batchtunnel.wire as wire


def test_every_public_name_resolves_to_its_home_module() -> None:
    assert sorted(wire.__all__) == sorted(wire._HOME)
    for name, home in wire._HOME.items():
        module = importlib.import_module(f"batchtunnel.wire.{home}")
        assert getattr(wire, name) is getattr(module, name), name
    assert set(wire.__all__) <= set(dir(wire))


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        wire.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("wire.NoSuchThing resolved")


def test_the_exception_tree_comes_without_the_protocol() -> None:
    # What `batchtunnel agent -- COMMAND` imports before it starts the command (cli/cmd_agent.py).
    code = ("import sys\nfrom batchtunnel.wire import ConfigurationError\n"
            "print(sorted(m for m in sys.modules if m.startswith('batchtunnel.wire.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['batchtunnel.wire.codes', 'batchtunnel.wire.exceptions']"
