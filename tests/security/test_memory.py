"""Memory that traffic alone leaves behind goes back to the operating system (#12, item 11).

Transfers through many sessions at once fragment the broker's heap with no session starting or ending,
which were the only moments it gave freed memory back (broker/memory.py): after a soak it stayed
19-35 MiB above its baseline for good. Now it also trims while traffic moves and once after it stopped.
"""

from __future__ import annotations

import asyncio

from tests.support.processes import eventually
from tests.tunnel import client

from .conftest import Arena, back_to_baseline

AGENTS = 12
STREAMS = 2  # per agent, at once
SIZE = 16 * 1024 * 1024
TRAFFIC_SLACK_KIB = 4 * 1024


async def test_memory_that_traffic_used_is_given_back_once_it_stops(arena: Arena) -> None:
    broker = arena.broker
    target = broker.client.tunnel(arena.healthy_id)["exposures"][0]["rport"]
    ports, agents, tunnels = [], [], []
    for i in range(AGENTS):
        tunnel = broker.client.create_tunnel(f"busy{i}")
        tunnels.append(tunnel["id"])
        agents.append(broker.start_agent(tunnel["token"], f"busy-agent{i}", tunnel_id=tunnel["id"]))
        ports.append(broker.client.expose(tunnel["id"], 0, target)["port"])
    try:
        async def traffic(streams: int) -> None:
            results = await asyncio.gather(*(client.download(port, SIZE, seed) for port in ports
                                             for seed in range(streams)))
            assert all(got == expected and size == SIZE for expected, got, size in results)

        async def trimmed() -> int:
            """The RSS after the broker's next trim (no session starts or ends here: only one that
            follows traffic comes)."""
            seen = broker.metrics()["batchtunnel_memory_trims_total"]
            await eventually(lambda: broker.metrics()["batchtunnel_memory_trims_total"] > seen, 30,
                             "a trim after the traffic stopped")
            return broker.rss_kib()

        # A first transfer on every session grows what a session keeps while it lives (windows, the TLS
        # layer's buffers: docs/security.md); what stays after it is the baseline.
        await traffic(1)
        idle = await trimmed()
        await traffic(STREAMS)
        busy = broker.rss_kib()
        settled = await trimmed()
        print(f"\nbroker RSS {idle} KiB idle, {busy} KiB after {AGENTS} x {STREAMS} x {SIZE >> 20} MiB, "
              f"{settled} KiB after the next trim")
        assert settled - idle < TRAFFIC_SLACK_KIB, "memory the traffic used stayed"
    finally:
        for agent in agents:
            agent.stop()
        for tunnel_id in tunnels:
            broker.client.delete_tunnel(tunnel_id)
    await back_to_baseline(arena)
