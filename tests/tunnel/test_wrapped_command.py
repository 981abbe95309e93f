"""``batchtunnel agent -- COMMAND``: the command starts before the agent loads asyncio, TLS and
websockets (agent/command.py), a bad option starts nothing, and an agent that ends never leaves its
command behind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.processes import BIN, Proc, ProcessGroup, free_port
from tests.support.tunnel import Pki

TOKEN = {"BATCHTUNNEL_TOKEN": "tabc.def"}


def _agent_in_python(procs: ProcessGroup, pki: Pki, code: str, command: str) -> Proc:
    """``batchtunnel agent -- python -c COMMAND``, dialling a port nobody listens on, in a Python that
    first runs ``code`` (a spy or a fault)."""
    main = "\nfrom batchtunnel.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    return procs.start("agent", [sys.executable, "-c", "import sys\n" + code + main, "agent",
                                 "--url", f"wss://localhost:{free_port()}/agent", "--cafile", pki.ca,
                                 "--", sys.executable, "-c", command], env=TOKEN)


def test_the_command_starts_before_the_agent_loads_asyncio_tls_and_websockets(procs: ProcessGroup, pki: Pki) -> None:
    spy = (
        "import batchtunnel.agent.command as job\n"
        "real_start = job.start\n"
        "def start(command, env):\n"
        "    heavy = ('asyncio', 'ssl', 'websockets', 'batchtunnel.wire.connection', 'batchtunnel.agent.dialer')\n"
        "    print('loaded when the command started:', [m for m in heavy if m in sys.modules], flush=True)\n"
        "    return real_start(command, env)\n"
        "job.start = start\n"
    )
    agent = _agent_in_python(procs, pki, spy, "print('the command ran')")
    assert agent.wait(15) == 0, agent.log()
    log = agent.log()
    assert "loaded when the command started: []" in log
    assert "the command ran" in log


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--url", "https://hub.example.org/agent"], {}, "--url must start with wss://"),
    (["--url", "wss://hub.example.org/agent", "--cafile", "/nonexistent/ca.pem"], {},
     "--cafile /nonexistent/ca.pem: No such file or directory"),
    (["--url", "wss://hub.example.org/agent", "--cafile", "/etc/hostname"], {},
     "--cafile /etc/hostname: no PEM certificate in it"),
    (["--url", "wss://hub.example.org/agent"], {"BATCHTUNNEL_CA_PEM": "not a certificate"},
     "BATCHTUNNEL_CA_PEM holds no PEM certificate"),
    (["--url", "wss://hub.example.org/agent", "--proxy", "socks5://proxy:1080"], {},
     "--proxy: socks5:// proxies are not supported"),
])
def test_a_bad_option_starts_no_command(procs: ProcessGroup, tmp_path: Path, args: list[str], env: dict[str, str],
                                        message: str) -> None:
    marker = tmp_path / "ran"
    agent = procs.start("agent", [str(BIN / "batchtunnel"), "agent", *args, "--", sys.executable, "-c",
                                  f"open({str(marker)!r}, 'w')"], env={**TOKEN, **env})
    assert agent.wait(15) == 2
    assert f"batchtunnel agent: error: {message}" in agent.log()
    assert not marker.exists()


def test_a_command_that_cannot_start_is_exit_status_127(procs: ProcessGroup, pki: Pki) -> None:
    agent = procs.start("agent", [str(BIN / "batchtunnel"), "agent", "--url", f"wss://localhost:{free_port()}/agent",
                                  "--cafile", pki.ca, "--", "/nonexistent/jupyterhub-singleuser"], env=TOKEN)
    assert agent.wait(15) == 127
    assert "cannot start /nonexistent/jupyterhub-singleuser: No such file or directory" in agent.log()


def test_an_agent_that_fails_stops_its_command(procs: ProcessGroup, pki: Pki) -> None:
    # The agent redials forever; it ends only on a fault. Then nothing can reach the notebook: the
    # command must not go on holding the job's allocation (here it would sleep 60 s).
    fault = (
        "from batchtunnel.agent.dialer import Agent\n"
        "async def broken(self):\n"
        "    raise RuntimeError('a fault in the agent')\n"
        "Agent.run = broken\n"
    )
    agent = _agent_in_python(procs, pki, fault, "import time; time.sleep(60)")
    assert agent.wait(20) == 1, agent.log()
    log = agent.log()
    assert "the agent stopped before the command: a fault in the agent" in log
    assert "stopping the command" in log
