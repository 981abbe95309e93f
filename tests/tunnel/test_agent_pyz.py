"""batchtunnel-agent.pyz: the agent as one file, run by a Python that has neither batchtunnel nor
websockets: Debian 11's python3.9 (scripts/python39.sh), the oldest Python the file supports."""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ProcessGroup, wait_until
from tests.support.python39 import build_pyz as build
from tests.support.python39 import python39 as support_python39
from tests.support.tunnel import BrokerProcess, target_server

from .client import download, echo


@pytest.fixture(scope="module")
def python39() -> tuple[str, str]:
    return support_python39()


@pytest.fixture(scope="module")
def pyz39(python39: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    output = tmp_path_factory.mktemp("pyz") / "batchtunnel-agent.pyz"
    said = build(output, "--websockets", python39[1])
    assert "with websockets 15.0.1, for Python 3.9 or newer" in said
    yield output


def test_the_file_holds_the_agent_and_pure_python_websockets_only(pyz39: Path) -> None:
    names = zipfile.ZipFile(pyz39).namelist()
    assert "__main__.py" in names and "batchtunnel/agent/dialer.py" in names and "websockets/client.py" in names
    assert "websockets/LICENSE" in names
    assert not [n for n in names if n.endswith((".so", ".pyc")) or n.startswith(("batchtunnel/broker/",
                                                                                  "batchtunnel/spawner/"))]
    assert pyz39.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_python39_has_neither_batchtunnel_nor_websockets(python39: tuple[str, str]) -> None:
    done = subprocess.run([python39[0], "-c", "import importlib.util as u, sys; print(sys.version_info[:2], "
                           "u.find_spec('batchtunnel'), u.find_spec('websockets'))"],
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "(3, 9) None None", done.stdout + done.stderr


async def test_the_pyz_agent_on_python39_carries_a_tunnel(python39: tuple[str, str], pyz39: Path,
                                                          broker: BrokerProcess, procs: ProcessGroup) -> None:
    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("pyz")
    agent = procs.start("agent", [python39[0], str(pyz39), "--url", broker.agent_url, "--cafile", broker.pki.ca],
                        env={"BATCHTUNNEL_TOKEN": tunnel["token"]})
    wait_until(lambda: broker.agent_connected(tunnel["id"]), 15, "the pyz agent to connect")
    port = broker.client.expose(tunnel["id"], 0, target_port)["port"]
    expected, received, size = await download(port, 64 * 1024 * 1024)
    assert (received, size) == (expected, 64 * 1024 * 1024)
    assert await echo(port, b"x" * 100_000) == b"x" * 100_000
    assert agent.alive() and f"connected to {broker.agent_url}" in agent.log()


def test_a_python_older_than_the_bundled_websockets_wants_is_told_so(python39: tuple[str, str],
                                                                      tmp_path: Path) -> None:
    output = tmp_path / "agent.pyz"
    said = build(output)  # this environment's websockets (17: Python 3.11 or newer)
    floor = said.split("for Python ")[1].split()[0]
    done = subprocess.run([python39[0], str(output), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == f"batchtunnel-agent.pyz needs Python {floor} or newer; this is 3.9.2"


def test_version_and_bad_arguments(python39: tuple[str, str], pyz39: Path) -> None:
    done = subprocess.run([python39[0], str(pyz39), "--version"], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip().startswith("batchtunnel-agent.pyz ") and "(websockets 15.0.1)" in done.stdout
    done = subprocess.run([python39[0], str(pyz39), "--url", "https://x/agent"], capture_output=True, text=True,
                          timeout=30, env={"BATCHTUNNEL_TOKEN": "t.x"})
    assert done.returncode == 2 and "--url must start with wss://" in done.stderr
