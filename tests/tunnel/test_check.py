"""``batchtunnel agent --check`` on a node: one line that names what is wrong, for each thing that can
be (name, route, TLS trust, pin, token, path), and "ok" without disturbing the running agent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.processes import BIN, free_port, wait_until
from tests.support.tunnel import BrokerProcess


def check(url: str, token: str, *options: str) -> tuple[int, str]:
    done = subprocess.run([str(BIN / "batchtunnel"), "agent", "--check", "--url", url, "--connect-timeout", "5",
                           *options], capture_output=True, text=True, timeout=60,
                          env={"BATCHTUNNEL_TOKEN": token, "PATH": "/usr/bin:/bin"})
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout + done.stderr  # one line, whatever happened
    return done.returncode, lines[0]


def test_a_good_setup_says_ok_and_leaves_the_running_agent_alone(broker: BrokerProcess) -> None:
    tunnel = broker.client.create_tunnel("checked")
    broker.start_agent(tunnel["token"], tunnel_id=tunnel["id"])
    since = broker.tunnel(tunnel["id"])["agent"]["connected_since"]
    status, line = check(broker.agent_url, tunnel["token"], "--cafile", broker.pki.ca)
    assert status == 0 and line.startswith("ok: ")
    assert f"token of tunnel {tunnel['id']} (its agent is connected)" in line
    assert broker.tunnel(tunnel["id"])["agent"]["connected_since"] == since  # not replaced
    assert broker.metrics()["batchtunnel_agent_sessions"] == 1


@pytest.mark.parametrize("case", ["name", "route", "trust", "pin", "token", "path"])
def test_each_problem_is_named(broker: BrokerProcess, tmp_path: Path, case: str) -> None:
    tunnel = broker.client.create_tunnel("checked")
    url, token, options = broker.agent_url, tunnel["token"], ["--cafile", broker.pki.ca]
    expected = {
        "name": "DNS: cannot resolve no-such-host.invalid",
        "route": "TCP: cannot connect to localhost:",
        "trust": "TLS: the broker's certificate is not trusted",
        "pin": "TLS: the broker's certificate sha256:",
        "token": "token: the broker refused it (HTTP 401",
        "path": "URL: the broker has no agent endpoint at /nope",
    }[case]
    if case == "name":
        url = "wss://no-such-host.invalid:8765/agent"
    elif case == "route":
        url = f"wss://localhost:{free_port()}/agent"
    elif case == "trust":
        options = []  # the system's CAs do not know the test CA
    elif case == "pin":
        options = ["--fingerprint", "sha256:" + ":".join(["00"] * 32)]
    elif case == "token":
        token = tunnel["id"] + ".AAAAnotthesecretAAAA"
    elif case == "path":
        url = url.replace("/agent", "/nope")
    status, line = check(url, token, *options)
    assert status == 1 and line.startswith(expected), line
    wait_until(lambda: broker.metrics()["batchtunnel_agent_sessions"] == 0, 10, "no session left")
