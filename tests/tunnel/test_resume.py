"""Streams outlive a lost agent link (docs/protocol.md §8-§9): real broker and agent processes, real TLS,
the link between them a relay the test cuts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.support.link import FreezableLink
from tests.support.processes import BIN, ProcessGroup, eventually_threaded
from tests.support.tunnel import BrokerProcess, Pki, target_server

from . import client

FAST_DETECTION = ("--heartbeat-interval", "0.3", "--heartbeat-timeout", "1.5",
                  "--backoff-initial", "0.2", "--backoff-max", "1")


@asynccontextmanager
async def relayed_agent(broker: BrokerProcess, procs: ProcessGroup, *extra: str) -> AsyncIterator[
        tuple[FreezableLink, dict[str, Any], int]]:
    """A tunnel whose agent reaches the broker through a relay; yields (relay, tunnel, hub-side port)."""
    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("resumable")
    link = FreezableLink(broker.agent_port)
    await link.start()
    try:
        procs.start("agent", [*_agent_argv(broker, link.port), *FAST_DETECTION, *extra],
                    env={"BATCHTUNNEL_TOKEN": tunnel["token"]})
        await eventually_threaded(lambda: broker.agent_connected(tunnel["id"]), 15, "the agent to connect")
        port = broker.client.expose(tunnel["id"], 0, target_port)["port"]
        yield link, tunnel, port
    finally:
        await link.close()


def _resumed(broker: BrokerProcess, tunnel_id: str, times: int) -> bool:
    """The tunnel's session was resumed ``times`` times and its agent is connected again."""
    agent = broker.tunnel(tunnel_id)["agent"]
    return bool(agent["connected"]) and int(agent["resumes"]) >= times


def _agent_argv(broker: BrokerProcess, port: int) -> list[str]:
    return [str(BIN / "batchtunnel"), "agent", "--url", f"wss://localhost:{port}/agent", "--cafile", broker.pki.ca]


async def open_echo(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An echo connection, checked once: it stands for an idle kernel WebSocket."""
    reader, writer = await client.connect(port)
    writer.write(b"echo\nhello")
    assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
    return reader, writer


async def test_transfers_and_an_idle_connection_survive_cuts_of_the_agent_link(
    broker: BrokerProcess, procs: ProcessGroup
) -> None:
    async with relayed_agent(broker, procs) as (link, tunnel, port):
        idle = await open_echo(port)
        download = asyncio.ensure_future(client.download(port, 96 * 1024 * 1024))
        upload = asyncio.ensure_future(client.upload(port, 48 * 1024 * 1024))
        await eventually_threaded(lambda: broker.metrics()["batchtunnel_agent_bytes_total{direction=\"in\"}"] > 8e6, 30,
                        "data to flow")
        for resumed, outage in enumerate((0.0, 2.0), 1):  # reset at once, then down for 2 s (redials fail)
            assert link.cut() >= 2
            link.down()
            await asyncio.sleep(outage)  # the outage itself: the test's subject, not a synchronisation
            link.up()
            # Not "connected": right after a cut the broker may not have seen the old link go yet.
            await eventually_threaded(lambda n=resumed: _resumed(broker, tunnel["id"], n), 15,
                                      "the agent to return and resume")
        expected, got, size = await asyncio.wait_for(download, 120)
        assert (got, size) == (expected, 96 * 1024 * 1024)
        sent, reported = await asyncio.wait_for(upload, 120)
        assert reported == sent
        reader, writer = idle  # the same TCP connection, never reset: it still echoes
        writer.write(b"again")
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"again"
        writer.close()
        agent = (await asyncio.to_thread(broker.tunnel, tunnel["id"]))["agent"]
        assert agent["resumes"] >= 2
        assert link.connections >= 3
        metrics = await asyncio.to_thread(broker.metrics)
        assert metrics["batchtunnel_resumes_total"] >= 2
        assert metrics["batchtunnel_agents_suspended"] == 0


async def test_connections_made_while_the_agent_is_away_wait_for_it(
    broker: BrokerProcess, procs: ProcessGroup
) -> None:
    async with relayed_agent(broker, procs) as (link, tunnel, port):
        link.down()
        await eventually_threaded(lambda: broker.tunnel(tunnel["id"])["agent"]["suspended"], 15, "the broker to notice")
        waiting = asyncio.ensure_future(client.echo(port, b"patience"))
        await asyncio.sleep(1.0)  # the outage
        assert not waiting.done()
        link.up()
        assert await asyncio.wait_for(waiting, 15) == b"patience"


async def test_past_the_grace_period_streams_are_reset_and_new_connections_work(
    procs: ProcessGroup, pki: Pki, tmp_path: Path
) -> None:
    broker = BrokerProcess(procs, pki, tmp_path, "--resume-grace", "2")
    async with relayed_agent(broker, procs, "--resume-grace", "2") as (link, tunnel, port):
        reader, writer = await open_echo(port)
        link.down()
        # The broker's grace runs out: the hub-side connection is reset, not left hanging.
        try:
            leftover = await asyncio.wait_for(reader.read(), 15)
        except ConnectionError:
            leftover = b""
        assert leftover == b""
        writer.close()
        assert "its 1 streams are reset" in broker.proc.log()  # type: ignore[union-attr]
        link.up()
        await eventually_threaded(lambda: broker.agent_connected(tunnel["id"]), 15, "the agent to return")
        assert await asyncio.wait_for(client.echo(port, b"fresh"), 10) == b"fresh"
        assert (await asyncio.to_thread(broker.tunnel, tunnel["id"]))["agent"]["resumes"] == 0
