"""A compute node whose only way out is the site's HTTP proxy, on the real Slurm cluster.

The node's firewall lets it reach slurmctld and tinyproxy's port on the hub side, nothing else: not
the broker, not the hub. The spawner's ``agent_proxy`` sends the agent through the proxy (with
credentials, in the job's environment); the hub API goes through the tunnel too. A notebook spawns
and runs code, and its kernel WebSocket lives through a restart of the proxy.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.http_proxy import TINYPROXY, HttpProxy
from tests.support.hub import Hub
from tests.support.kernel import kernel
from tests.support.processes import ProcessGroup, free_port, wait_until
from tests.support.tunnel import BrokerProcess, Pki

from .conftest import HUB_SIDE, NODE, REQUIREMENTS, cluster, empty_queue
from .test_slurm import spawn, squeue, user_http

pytestmark = [*REQUIREMENTS, pytest.mark.skipif(not Path(TINYPROXY).exists(), reason="needs tinyproxy")]

USER = "btslurm3"


@pytest.fixture
def proxied_stack(slurm: str, procs: ProcessGroup, pki: Pki,
                  tmp_path: Path) -> Iterator[tuple[Hub, BrokerProcess, HttpProxy]]:
    empty_queue()
    hub_api_port = free_port()
    broker = BrokerProcess(procs, pki, tmp_path / "broker", "--hub-api", f"{HUB_SIDE}:{hub_api_port}",
                           listen_host=HUB_SIDE, public_host=HUB_SIDE)
    proxy = HttpProxy(procs, tmp_path / "proxy", [broker.agent_port], listen=HUB_SIDE, allow=NODE,
                      user="cluster", password="node-proxy-pw")
    hub = Hub(procs, tmp_path / "hub", broker, backend="real-slurm", hub_ip=HUB_SIDE, api_port=hub_api_port,
              hub_api_via_tunnel=True, external_proxy=True, agent_proxy=proxy.url())
    cluster("firewall", "strict", str(proxy.port))  # the broker's port is not among them
    try:
        yield hub, broker, proxy
    finally:
        hub.api("DELETE", f"/hub/api/users/{USER}/server")
        cluster("firewall", "default")
        subprocess.run(["scancel", "--partition=debug"], capture_output=True)
        empty_queue()


async def test_a_node_behind_an_http_proxy_spawns_and_survives_a_proxy_restart(
        proxied_stack: tuple[Hub, BrokerProcess, HttpProxy]) -> None:
    hub, broker, proxy = proxied_stack
    events = spawn(hub, USER)
    assert events[-1].get("ready"), events
    assert any("btnode1" in str(event.get("message")) for event in events), events
    (tunnel,) = broker.client.tunnels()
    assert proxy.connects(broker.agent_port) == 1  # the agent's one dial, through the proxy
    assert tunnel["agent"]["streams_from_agent"] >= 1  # the hub API, through the tunnel
    http, base = user_http(hub, USER)
    async with http, kernel(http, base) as k:
        # Nothing but the proxy: a direct connection to the broker from the node is dropped.
        assert await k.execute(f"import socket\ntry:\n    socket.create_connection(('{HUB_SIDE}', "
                               f"{broker.agent_port}), timeout=2); r = 'open'\nexcept OSError as e: r = "
                               "type(e).__name__\nr") == "'TimeoutError'"
        proxy.restart()
        await asyncio.to_thread(wait_until, lambda: broker.tunnel(tunnel["id"])["agent"]["resumes"] >= 1, 60,
                                "the agent to resume through the restarted proxy")
        assert not k.ws.closed
        assert await k.execute("6 * 7") == "42"
    assert proxy.connects(broker.agent_port) >= 2
    assert len(squeue().splitlines()) == 1
