"""Agents coming and going: credentials, broker restarts, dead links, wrapped commands, connect."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.link import FreezableLink
from tests.support.processes import BIN, ProcessGroup, eventually_threaded, free_port, port_open, wait_until
from tests.support.tunnel import ADMIN_TOKEN, BrokerProcess, Pki, target_server

from . import client


async def test_wrong_token_is_refused(broker: BrokerProcess, procs: ProcessGroup) -> None:
    tunnel = broker.client.create_tunnel("victim")
    agent = broker.start_agent(tunnel["id"] + ".not-the-secret", "bad-agent", wait=False)
    wait_until(lambda: "refused this agent's credential" in agent.log(), 15, "the agent to report refusal")
    assert "refused: unknown tunnel or wrong credential" in broker.proc.log()  # type: ignore[union-attr]
    assert not broker.agent_connected(tunnel["id"])
    # The same at the HTTP level: no WebSocket is ever upgraded without a valid credential.
    async with aiohttp.ClientSession() as http:
        for header in ({}, {"Authorization": "Bearer garbage"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(broker.agent_url, headers=header, ssl=False)
            assert exc.value.status == 401


async def test_agent_reconnects_after_broker_kill9_and_old_port_answers(
    broker: BrokerProcess, procs: ProcessGroup
) -> None:
    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("survivor")
    broker.start_agent(tunnel["token"], "agent", "--backoff-max", "1", tunnel_id=tunnel["id"])
    port = broker.client.expose(tunnel["id"], 0, target_port)["port"]
    assert await client.echo(port, b"before") == b"before"

    assert broker.proc is not None
    broker.proc.kill9()
    assert not port_open(port)
    broker.start()
    wait_until(lambda: broker.agent_connected(tunnel["id"]), 15, "the agent to reconnect")
    assert await asyncio.wait_for(client.echo(port, b"after"), 10) == b"after"


async def test_heartbeat_detects_a_silently_dead_link(broker: BrokerProcess, procs: ProcessGroup) -> None:
    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("flaky")
    link = FreezableLink(broker.agent_port)
    await link.start()
    try:
        agent = procs.start(
            "agent",
            [str(BIN / "batchtunnel"), "agent", "--url", f"wss://localhost:{link.port}/agent",
             "--cafile", broker.pki.ca, "--heartbeat-interval", "0.3", "--heartbeat-timeout", "1.5",
             "--backoff-initial", "0.2", "--backoff-max", "1"],
            env={"BATCHTUNNEL_TOKEN": tunnel["token"]},
        )
        await eventually_threaded(lambda: broker.agent_connected(tunnel["id"]), 15, "the agent to connect")
        port = broker.client.expose(tunnel["id"], 0, target_port)["port"]
        first = broker.tunnel(tunnel["id"])["agent"]["connected_since"]
        assert await client.echo(port, b"x") == b"x"

        link.freeze()  # nothing moves any more, yet no connection is closed
        await eventually_threaded(lambda: "nothing heard" in agent.log(), 10, "the agent's heartbeat to notice")
        await eventually_threaded(
            lambda: broker.tunnel(tunnel["id"])["agent"]["connected_since"] not in (None, first),
            15, "a new agent connection",
        )
        assert link.connections >= 2
        assert broker.tunnel(tunnel["id"])["agent"]["resumes"] >= 1  # the session went on over it
        assert await asyncio.wait_for(client.echo(port, b"y"), 10) == b"y"
    finally:
        await link.close()


def test_agent_wraps_command_forwards_sigterm_and_exits_with_its_status(
    broker: BrokerProcess, procs: ProcessGroup, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    script = (
        "import signal, sys, time\n"
        f"def on_term(*a):\n    open({str(marker)!r}, 'w').write('TERM'); sys.exit(42)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "print('child ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    tunnel = broker.client.create_tunnel("wrapper")
    agent = broker.start_agent(tunnel["token"], "agent", "--", sys.executable, "-c", script,
                               tunnel_id=tunnel["id"])
    wait_until(lambda: "child ready" in agent.log(), 10, "the wrapped command to start")
    agent.signal(signal.SIGTERM)
    assert agent.wait(10) == 42
    assert marker.read_text() == "TERM"


def test_wrapped_command_runs_even_when_broker_unreachable(procs: ProcessGroup, pki: Pki) -> None:
    agent = procs.start(
        "agent",
        [str(BIN / "batchtunnel"), "agent", "--url", f"wss://localhost:{free_port()}/agent",
         "--cafile", pki.ca, "--", sys.executable, "-c", "import sys; print('ran'); sys.exit(7)"],
        env={"BATCHTUNNEL_TOKEN": "tabc.def"},
    )
    assert agent.wait(15) == 7
    assert "ran" in agent.log()


def _connect(procs: ProcessGroup, broker: BrokerProcess, *args: str, name: str = "connect"):  # type: ignore[no-untyped-def]
    return procs.start(
        name, [str(BIN / "batchtunnel"), "connect", "--api-url", broker.api_url, *args],
        env={"BATCHTUNNEL_ADMIN_TOKEN": ADMIN_TOKEN},
    )


async def test_connect_exposes_and_exits_cleanly_on_sigterm(broker: BrokerProcess, procs: ProcessGroup) -> None:
    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("c1")
    broker.start_agent(tunnel["token"], tunnel_id=tunnel["id"])
    port = free_port()
    proc = _connect(procs, broker, "--tunnel", tunnel["id"], "--port", str(port), "--rport", str(target_port))
    wait_until(lambda: port_open(port), 10, "connect to expose the port")
    assert await client.echo(port, b"hello") == b"hello"
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert broker.tunnel(tunnel["id"])["exposures"] == []
    assert not port_open(port)


async def test_connect_keeps_the_exposure_when_told_and_a_second_run_takes_it_over(
    broker: BrokerProcess, procs: ProcessGroup
) -> None:
    """What a hub restarted by its service manager needs: the connect step dies with the hub, the
    notebook stays reachable, and the restarted hub's run of the same command takes the port over."""
    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("kept")
    broker.start_agent(tunnel["token"], tunnel_id=tunnel["id"])
    port = free_port()
    args = ("--tunnel", tunnel["id"], "--port", str(port), "--rport", str(target_port), "--keep-exposure")
    first = _connect(procs, broker, *args)
    wait_until(lambda: port_open(port), 10, "connect to expose the port")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # open across the restart
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 0
    assert [e["port"] for e in broker.tunnel(tunnel["id"])["exposures"]] == [port]
    assert await client.echo(port, b"while no connect step runs") == b"while no connect step runs"
    second = _connect(procs, broker, *args, name="connect-again")
    wait_until(lambda: "reachable on" in second.log(), 10, "the second connect step")
    assert second.alive()
    writer.write(b"echo\n")
    await writer.drain()
    writer.write(b"still the same connection")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b"still the same connection"
    writer.close()
    second.signal(signal.SIGTERM)
    assert second.wait(10) == 0
    broker.client.delete_tunnel(tunnel["id"])  # what the spawner does when the server ends
    wait_until(lambda: not port_open(port), 10, "the exposure to go with its tunnel")


def test_connect_exits_3_when_tunnel_deleted(broker: BrokerProcess, procs: ProcessGroup) -> None:
    tunnel = broker.client.create_tunnel("c2")
    broker.start_agent(tunnel["token"], tunnel_id=tunnel["id"])
    proc = _connect(procs, broker, "--tunnel", tunnel["id"], "--rport", "9", "--poll-interval", "0.2")
    wait_until(lambda: broker.tunnel(tunnel["id"])["exposures"], 10, "the exposure")
    broker.client.delete_tunnel(tunnel["id"])
    assert proc.wait(10) == 3
    assert "was deleted" in proc.log()


def test_connect_exits_5_when_agent_gone_past_grace(broker: BrokerProcess, procs: ProcessGroup) -> None:
    tunnel = broker.client.create_tunnel("c3")
    agent = broker.start_agent(tunnel["token"], tunnel_id=tunnel["id"])
    proc = _connect(procs, broker, "--tunnel", tunnel["id"], "--rport", "9", "--poll-interval", "0.2",
                    "--grace", "1")
    wait_until(lambda: broker.tunnel(tunnel["id"])["exposures"], 10, "the exposure")
    assert proc.alive()
    agent.stop()
    assert proc.wait(15) == 5
    assert "agent disconnected for more than" in proc.log()


def test_connect_exits_2_for_unknown_tunnel(broker: BrokerProcess, procs: ProcessGroup) -> None:
    proc = _connect(procs, broker, "--tunnel", "tnope", "--rport", "9")
    assert proc.wait(10) == 2
    assert "no tunnel 'tnope'" in proc.log()


def test_agent_needs_only_websockets_and_the_standard_library(broker: BrokerProcess, procs: ProcessGroup) -> None:
    # What a job's Python environment may lack: everything the hub side uses.
    blocked = ["aiohttp", "cryptography", "jupyterhub", "batchspawner", "uvloop", "psutil"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n    sys.modules[name] = None\n"
        "from batchtunnel.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    tunnel = broker.client.create_tunnel("minimal")
    procs.start(
        "minimal-agent",
        [sys.executable, "-c", code, "agent", "--url", broker.agent_url, "--cafile", broker.pki.ca],
        env={"BATCHTUNNEL_TOKEN": tunnel["token"]},
    )
    wait_until(lambda: broker.agent_connected(tunnel["id"]), 15, "the minimal agent to connect")


def test_hub_api_through_the_tunnel_only_where_the_broker_says(
    procs: ProcessGroup, pki: Pki, tmp_path: Path
) -> None:
    # A stand-in for the hub's API, reachable by the broker only.
    (tmp_path / "hub" / "api").mkdir(parents=True)
    (tmp_path / "hub" / "api" / "ping").write_text("pong from the hub")
    hub_port = free_port()
    procs.start("hub-api", [sys.executable, "-m", "http.server", str(hub_port), "--bind", "127.0.0.1"],
                cwd=tmp_path)
    wait_until(lambda: port_open(hub_port), 10, "the stand-in hub API")
    broker = BrokerProcess(procs, pki, tmp_path / "broker", "--hub-api", f"127.0.0.1:{hub_port}")
    tunnel = broker.client.create_tunnel("single-port")
    out = tmp_path / "out.txt"
    # The job's notebook only knows JUPYTERHUB_API_URL; it points nowhere useful until the agent rewrites it.
    script = (
        "import os, urllib.request\n"
        "url = os.environ['JUPYTERHUB_API_URL'].rsplit('/', 1)[0] + '/api/ping'\n"
        f"open({str(out)!r}, 'w').write(url + ' ' + urllib.request.urlopen(url, timeout=10).read().decode())\n"
    )
    agent = procs.start(
        "agent",
        [str(BIN / "batchtunnel"), "agent", "--url", broker.agent_url, "--cafile", pki.ca, "--hub-api-via-tunnel",
         "--backoff-initial", "0.1", "--", sys.executable, "-c",
         "import time, subprocess, sys; time.sleep(1.5); sys.exit(subprocess.call([sys.executable, '-c', "
         f"{script!r}]))"],
        env={"BATCHTUNNEL_TOKEN": tunnel["token"], "JUPYTERHUB_API_URL": f"http://127.0.0.1:{free_port()}/hub/api"},
    )
    assert agent.wait(20) == 0, agent.log()
    url, body = out.read_text().split(" ", 1)
    assert body == "pong from the hub"
    assert url.startswith("http://127.0.0.1:") and str(hub_port) not in url


async def test_agent_opened_streams_are_refused_without_hub_api(broker: BrokerProcess, procs: ProcessGroup) -> None:
    tunnel = broker.client.create_tunnel("no-hub-api")
    agent = procs.start(
        "agent",
        [str(BIN / "batchtunnel"), "agent", "--url", broker.agent_url, "--cafile", broker.pki.ca,
         "--hub-api-via-tunnel", "--log-level", "INFO", "--", sys.executable, "-c",
         "import os, time; time.sleep(1.5); print('API', os.environ.get('JUPYTERHUB_API_URL')); time.sleep(30)"],
        env={"BATCHTUNNEL_TOKEN": tunnel["token"], "JUPYTERHUB_API_URL": "http://hub.invalid:8081/hub/api"},
    )
    wait_until(lambda: "API http://127.0.0.1:" in agent.log(), 15, "the command to see the rewritten URL")
    port = int(agent.log().split("API http://127.0.0.1:")[1].split("/")[0])
    assert await client.closed_promptly(port)
    wait_until(lambda: "refused (no --hub-api configured)" in broker.proc.log(), 10, "the broker to refuse")  # type: ignore[union-attr]
