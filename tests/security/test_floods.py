"""Floods of input that asks for answers, from a peer that never reads them (docs/protocol.md 7.1).

A hostile agent with a valid token sends wire PINGs (and WebSocket PINGs) without reading the answers,
while the healthy agent keeps downloading; then a hostile broker does the same to a real agent. The
flooded side must stop reading instead of queueing answers: its memory stays flat, and the healthy
traffic goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from pathlib import Path

from batchtunnel.wire import Connection, Settings, Side
from batchtunnel.wire.frames import FrameType
from websockets.asyncio.server import ServerConnection, serve

from tests.support.frames import frame
from tests.support.processes import BIN, ProcessGroup, eventually, free_port
from tests.support.tunnel import Pki

from .conftest import RSS_SLACK_KIB, Arena, back_to_baseline, healthy_traffic
from .hostile import HostileAgent

FLOOD_SECONDS = 8.0
PINGS = frame(FrameType.PING, 0, b"12345678") * (1024 * 1024 // 18)  # ~1 MiB of PINGs per message


async def flood(send: object, seconds: float) -> int:
    """Send PING messages for ``seconds`` (the peer may stop reading: then sending blocks). Returns the
    bytes sent."""
    sent = 0

    async def go() -> None:
        nonlocal sent
        while True:
            await send(PINGS)  # type: ignore[operator]
            sent += len(PINGS)

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(go(), seconds)
    return sent


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


async def test_a_ping_flood_whose_answers_are_never_read_costs_the_broker_nothing(arena: Arena) -> None:
    assert arena.broker.proc is not None
    peak = arena.rss_start_kib
    async with healthy_traffic(arena) as done:
        agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca)
        # From here on the hostile agent reads nothing: websockets stops reading its socket once 16
        # messages wait in its queue, so the broker's answers back up.
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, arena.broker.rss_kib())
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        sent = await flood(agent.send, FLOOD_SECONDS)
        sampling = False
        await sampler
        before = len(done)
        await eventually(lambda: len(done) > before, 30, "a healthy download during the flood's aftermath")
        agent.ws.transport.abort()  # leave without a word
    print(f"\nhostile agent sent {sent / 2**20:.1f} MiB of PINGs; broker RSS peak +{peak - arena.rss_start_kib} KiB;"
          f" {len(done)} healthy downloads meanwhile")
    assert sent > 1024 * 1024  # the flood did reach the broker
    assert peak - arena.rss_start_kib < RSS_SLACK_KIB, "the broker queued answers nobody reads"
    await back_to_baseline(arena)


async def test_a_websocket_ping_flood_is_read_only_as_fast_as_its_answers_are(arena: Arena) -> None:
    assert arena.broker.proc is not None
    agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca)
    transport = agent.ws.transport
    transport.pause_reading()  # read nothing from now on
    start = arena.broker.rss_kib()
    # 64 MiB of WebSocket PING frames (125-byte payloads, masked as a client must), written raw.
    ping = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125
    burst = ping * (1024 * 1024 // len(ping))
    deadline = time.monotonic() + FLOOD_SECONDS
    written = 0
    while time.monotonic() < deadline and written < 64 * 1024 * 1024:
        if transport.get_write_buffer_size() > 4 * 1024 * 1024:  # the broker reads no faster
            await asyncio.sleep(0.05)
            continue
        transport.write(burst)
        written += len(burst)
        await asyncio.sleep(0)
    grown = arena.broker.rss_kib() - start
    transport.abort()
    print(f"\nwrote {written / 2**20:.1f} MiB of WebSocket PINGs; broker RSS +{grown} KiB")
    assert written > 4 * 1024 * 1024
    assert grown < RSS_SLACK_KIB, "the broker queued PONGs nobody reads"
    # Nor did it go on parsing PINGs it could not answer (each costs it CPU, not the flooder): it stops
    # reading once its PONGs wait, so the flood stalls at what the sockets' buffers hold (13 MiB
    # here), where a broker that kept reading took all 64 MiB within the flood's seconds.
    assert written < 40 * 1024 * 1024, "the broker kept reading PINGs whose answers nobody reads"
    await back_to_baseline(arena)


async def test_a_hostile_broker_flooding_pings_costs_the_agent_nothing(procs: ProcessGroup, pki: Pki) -> None:
    port = free_port()
    flooded = asyncio.Event()
    sent = 0

    async def hostile_broker(ws: ServerConnection) -> None:
        nonlocal sent
        await ws.send(Connection(Side.BROKER, Settings(features=())).data_to_send())  # HELLO, then the flood
        sent = await flood(ws.send, FLOOD_SECONDS)
        flooded.set()
        await ws.wait_closed()

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.cert, pki.key)
    async with serve(hostile_broker, "127.0.0.1", port, ssl=ctx, max_queue=1, ping_interval=None,
                     compression=None):
        agent = procs.start("agent", [str(BIN / "batchtunnel"), "agent", "--url", f"wss://localhost:{port}/agent",
                                      "--cafile", pki.ca], env={"BATCHTUNNEL_TOKEN": "tabc.def"})
        start = 0
        await eventually(lambda: "connected to" in agent.log(), 15, "the agent to connect")
        start = rss_kib(agent.pid)
        peak = start
        while not flooded.is_set():
            peak = max(peak, rss_kib(agent.pid))
            await asyncio.sleep(0.1)
    print(f"\nhostile broker sent {sent / 2**20:.1f} MiB of PINGs; agent RSS {start} KiB, peak +{peak - start} KiB")
    assert sent > 1024 * 1024
    assert peak - start < RSS_SLACK_KIB, "the agent queued answers nobody reads"
