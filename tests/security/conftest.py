"""The arena: one live broker with small limits, a healthy agent moving data, and a hostile tunnel.

Tests that fail authentication on purpose dial from their own 127.0.0.x source address, so the
per-address back-off they may trigger never touches the healthy agent (127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import ProcessGroup, eventually
from tests.support.tunnel import BrokerProcess, Pki, target_server
from tests.tunnel import client

HANDSHAKE_TIMEOUT = 2.0
MAX_UNAUTHENTICATED = 32
AUTH_FAILURE_LIMIT = 5
MAX_STREAMS = 64
TRANSFER = 8 * 1024 * 1024
RSS_SLACK_KIB = 16 * 1024
API_TIMEOUT = 3.0
API_MAX_CONNECTIONS = 64  # the default


@dataclass
class Arena:
    broker: BrokerProcess
    healthy_id: str
    healthy_port: int  # hub-side port of the healthy tunnel
    hostile_id: str
    hostile_token: str
    hostile_port: int  # hub-side port of the hostile tunnel: connections become OPENs to the hostile agent
    rss_start_kib: int = 0
    fds_start: int = 0

    @property
    def url(self) -> str:
        return self.broker.agent_url

    @property
    def ca(self) -> str:
        return self.broker.pki.ca


@pytest.fixture(scope="module")
def arena(module_procs: ProcessGroup, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    broker = BrokerProcess(
        module_procs, pki, Path(tmp_path_factory.mktemp("arena")),
        "--handshake-timeout", str(HANDSHAKE_TIMEOUT), "--max-unauthenticated", str(MAX_UNAUTHENTICATED),
        "--auth-failure-limit", str(AUTH_FAILURE_LIMIT), "--auth-block-max", "30",
        "--max-streams", str(MAX_STREAMS), "--api-timeout", str(API_TIMEOUT),
        # A session the hostile agent abandons mid-resumption is held this long, then the baseline returns.
        "--resume-grace", "3",
    )
    _, target_port = target_server(module_procs)
    healthy = broker.client.create_tunnel("healthy")
    broker.start_agent(healthy["token"], "healthy-agent", tunnel_id=healthy["id"])
    healthy_port = broker.client.expose(healthy["id"], 0, target_port)["port"]
    hostile = broker.client.create_tunnel("hostile")
    hostile_port = broker.client.expose(hostile["id"], 0, 9)["port"]
    arena = Arena(broker, healthy["id"], healthy_port, hostile["id"], hostile["token"], hostile_port)
    # Warm up (first transfers grow windows and buffers), then take the baseline.
    asyncio.run(client.download(healthy_port, TRANSFER))
    arena.rss_start_kib = broker.rss_kib()
    arena.fds_start = broker.fd_count()
    yield arena
    print(f"\nbroker RSS: {arena.rss_start_kib} KiB after warm-up, {broker.rss_kib()} KiB after the suite")


@contextlib.asynccontextmanager
async def healthy_traffic(arena: Arena) -> AsyncIterator[list[int]]:
    """Downloads through the healthy tunnel, one after another, for as long as the block runs; each is
    checked by sha256. Yields the list of completed sizes; at the end at least one more must complete."""
    done: list[int] = []
    stop = asyncio.Event()

    async def loop() -> None:
        seed = 10
        while not stop.is_set():
            seed += 1
            expected, got, size = await client.download(arena.healthy_port, TRANSFER, seed)
            assert got == expected and size == TRANSFER, f"healthy download {seed} corrupted"
            done.append(size)

    task = asyncio.create_task(loop())
    try:
        yield done
        before = len(done)
        await eventually(lambda: len(done) > before or task.done(), 30, "a healthy download after the attack")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)  # raises if a download failed


async def back_to_baseline(arena: Arena, sessions: int = 1) -> None:
    """No connection left waiting to authenticate, only the expected sessions, no stream left open, no
    extra descriptor, and no memory growth that stays (Python and glibc keep some freed memory for
    reuse, so "back to baseline" means within RSS_SLACK_KIB; the broker trims a second after sessions
    end, so this waits for it)."""
    def calm() -> bool:
        m = arena.broker.metrics()
        return (m["batchtunnel_unauthenticated_connections"] == 0
                and m["batchtunnel_agent_sessions"] == sessions
                and m["batchtunnel_streams_open"] == 0
                and arena.broker.fd_count() <= arena.fds_start)

    await eventually(lambda: calm(), 15, "the broker to return to its baseline")
    try:
        await eventually(lambda: arena.broker.rss_kib() - arena.rss_start_kib < RSS_SLACK_KIB, 10,
                         "the broker's memory to return to its baseline")
    except AssertionError:
        raise AssertionError(f"broker RSS grew by {arena.broker.rss_kib() - arena.rss_start_kib} KiB "
                             "and stayed") from None
