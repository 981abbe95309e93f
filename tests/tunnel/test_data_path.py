"""Bytes through broker + agent over real TLS: size, concurrency, half-close, resets, stalls."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.support.processes import ProcessGroup
from tests.support.tunnel import BrokerProcess, Pki

from . import client
from .conftest import TunnelEnv

MIB = 1024 * 1024


async def test_upload_256_mib_sha256(tunnel_env: TunnelEnv) -> None:
    expected, reported = await asyncio.wait_for(client.upload(tunnel_env.port, 256 * MIB), 120)
    assert reported == expected


async def test_download_256_mib_sha256(tunnel_env: TunnelEnv) -> None:
    expected, got, n = await asyncio.wait_for(client.download(tunnel_env.port, 256 * MIB), 120)
    assert n == 256 * MIB
    assert got == expected


async def test_half_close_still_receives_full_reply(tunnel_env: TunnelEnv) -> None:
    # The sink only answers after our EOF: the reply travels on the still-open direction.
    expected, reported = await asyncio.wait_for(client.upload(tunnel_env.port, 3000), 30)
    assert reported == expected


async def test_200_concurrent_streams(tunnel_env: TunnelEnv) -> None:
    payloads = [os.urandom(64 * 1024) for _ in range(200)]
    results = await asyncio.wait_for(
        asyncio.gather(*(client.echo(tunnel_env.port, p) for p in payloads)), 120
    )
    assert results == payloads
    assert tunnel_env.broker.tunnel(tunnel_env.tunnel_id)["agent"]["streams"] == 0


async def test_stalled_stream_does_not_block_another(tunnel_env: TunnelEnv) -> None:
    _, writer = await client.connect(tunnel_env.port)
    writer.write(b"forever\n")  # the target sends forever; we never read
    await writer.drain()
    try:
        expected, got, n = await asyncio.wait_for(client.download(tunnel_env.port, 64 * MIB, seed=5), 120)
        assert n == 64 * MIB and got == expected
        # The stalled stream is still open, held back by its window, not torn down.
        assert tunnel_env.broker.tunnel(tunnel_env.tunnel_id)["agent"]["streams"] >= 1
    finally:
        writer.close()


async def test_refused_on_node_closes_client_promptly(tunnel_env: TunnelEnv) -> None:
    from tests.support.processes import free_port

    dead_port = free_port()  # nothing listens there on the "node"
    exposure = tunnel_env.broker.client.expose(tunnel_env.tunnel_id, 0, dead_port)
    try:
        assert await client.closed_promptly(exposure["port"])
    finally:
        tunnel_env.broker.client.unexpose(tunnel_env.tunnel_id, exposure["port"])


async def test_no_agent_closes_client_promptly(procs: ProcessGroup, pki: Pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broker = BrokerProcess(procs, pki, tmp_path)
    tunnel = broker.client.create_tunnel("lonely")
    exposure = broker.client.expose(tunnel["id"], 0, 8888)
    assert await client.closed_promptly(exposure["port"])
    assert "no agent connected" in broker.proc.log()  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [0, 1, 65535, 256 * 1024 + 1])
async def test_echo_sizes(tunnel_env: TunnelEnv, size: int) -> None:
    payload = os.urandom(size)
    assert await asyncio.wait_for(client.echo(tunnel_env.port, payload), 30) == payload
