"""The link between the hub side and the firewalled node goes down (ip link), on the real Slurm cluster.

A cut shorter than the resume grace period is survived by open connections (a download and a
kernel WebSocket); a longer one resets them cleanly and new connections work once the link is back;
a node that stays lost ends the server with a reason the user sees.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.hub import JOBENV, Hub
from tests.support.kernel import kernel
from tests.support.processes import BIN, ProcessGroup, reset_connections, wait_until
from tests.support.tunnel import BrokerProcess, Pki

from .conftest import HUB_SIDE, REQUIREMENTS, empty_queue
from .test_slurm import download_across, notebook_file, spawn, squeue, user_http

pytestmark = REQUIREMENTS

NODE_IF = "bt-node0"  # the node's side of its veth pair to the hub side (scripts/slurm-cluster.sh)
GRACE = 8.0  # the connect command's --grace in the lossy stack


def link(state: str) -> None:
    """The node's link, from inside its namespace (the hub side's address stays up for the hub)."""
    subprocess.run(["nsenter", "--net=/run/netns/btnode", "ip", "link", "set", NODE_IF, state], check=True)


@pytest.fixture
def cut_link() -> Iterator[None]:
    """The test may take the link down; it is up again afterwards, whatever happened."""
    yield
    link("up")


@pytest.fixture
def lossy_stack(slurm: str, procs: ProcessGroup, pki: Pki, tmp_path: Path) -> Iterator[tuple[Hub, BrokerProcess]]:
    """A stack whose hub gives up on an unreachable agent after GRACE seconds and polls every 2 s."""
    empty_queue()
    broker = BrokerProcess(procs, pki, tmp_path / "broker", listen_host=HUB_SIDE, public_host=HUB_SIDE)
    hub = Hub(procs, tmp_path / "hub", broker, backend="real-slurm", hub_ip=HUB_SIDE, external_proxy=True,
              poll_interval=2,
              connect_to_job_cmd=f"{BIN / 'batchtunnel'} connect --tunnel {{tunnel_id}} --port {{port}} "
                                 f"--rport {{rport}} --poll-interval 0.5 --grace {GRACE}")
    yield hub, broker
    hub.api("DELETE", "/hub/api/users/btslurm7/server")
    subprocess.run(["scancel", "--partition=debug"], capture_output=True)
    empty_queue()


FAST = ("--heartbeat-interval", "1", "--heartbeat-timeout", "4")
"""Heartbeats that declare the link dead well inside a 10 s cut (the default, 15 s, would not: TCP
would simply retransmit after the cut and nothing would need resuming)."""


@pytest.fixture
def drop_stack(request: pytest.FixtureRequest, slurm: str, procs: ProcessGroup, pki: Pki,
               tmp_path: Path) -> Iterator[tuple[Hub, BrokerProcess]]:
    """A stack whose broker and agents detect a dead link within 4 s and resume within
    ``request.param`` seconds."""
    grace = str(request.param)
    empty_queue()
    broker = BrokerProcess(procs, pki, tmp_path / "broker", *FAST, "--resume-grace", grace,
                           listen_host=HUB_SIDE, public_host=HUB_SIDE)
    hub = Hub(procs, tmp_path / "hub", broker, backend="real-slurm", hub_ip=HUB_SIDE, external_proxy=True,
              agent_cmd=[str(JOBENV / "batchtunnel"), "agent", *FAST, "--backoff-max", "2",
                         "--resume-grace", grace])
    yield hub, broker
    for user in ("btslurm6", "btslurm8"):
        hub.api("DELETE", f"/hub/api/users/{user}/server")
    subprocess.run(["scancel", "--partition=debug"], capture_output=True)
    empty_queue()


async def survives(hub: Hub, broker: BrokerProcess, user: str, size: int,
                   disrupt: Callable[[str], Awaitable[None]]) -> str:
    """Spawn ``user``'s server, download a ``size``-byte file from its notebook while ``disrupt(tunnel
    id)`` runs, and check that the download is whole and that the kernel WebSocket opened before is
    the same connection and answers. Returns the tunnel id."""
    assert spawn(hub, user)[-1].get("ready")
    (tunnel,) = broker.client.tunnels()
    http, base = user_http(hub, user)
    async with http, kernel(http, base) as k:
        digest = await notebook_file(k, size)
        assert await download_across(http, base, lambda: disrupt(tunnel["id"])) == digest
        assert not k.ws.closed
        assert await k.execute("6 * 7") == "42"
    return str(tunnel["id"])


@pytest.mark.parametrize("drop_stack", [60], indirect=True)
async def test_a_10_s_cut_is_survived_by_a_download_and_an_idle_kernel_websocket(
        drop_stack: tuple[Hub, BrokerProcess], cut_link: None) -> None:
    hub, broker = drop_stack

    async def cut_for_10_s(tunnel_id: str) -> None:
        link("down")  # silently: no FIN, no RST reaches either side
        await asyncio.to_thread(wait_until, lambda: broker.tunnel(tunnel_id)["agent"]["suspended"],
                                8, "the broker to declare the link dead and hold the session")
        await asyncio.sleep(10 - 4)  # the rest of the 10 s cut: the test's subject, not a wait
        link("up")

    tunnel_id = await survives(hub, broker, "btslurm8", 100 * 1024 * 1024, cut_for_10_s)
    agent = broker.tunnel(tunnel_id)["agent"]
    assert agent["connected"] and agent["resumes"] >= 1, agent
    assert len(squeue().splitlines()) == 1


async def test_a_killed_websocket_is_resumed_with_shipped_settings(stack: tuple[Hub, BrokerProcess]) -> None:
    """No tuning: a reset is noticed at once and the session resumes within the default grace."""
    hub, broker = stack

    async def kill_the_websocket(tunnel_id: str) -> None:  # from the node's side, as a proxy killing it would
        assert reset_connections(HUB_SIDE, broker.agent_port, netns="btnode") == 1

    tunnel_id = await survives(hub, broker, "btslurm1", 64 * 1024 * 1024, kill_the_websocket)
    await asyncio.to_thread(wait_until, lambda: broker.tunnel(tunnel_id)["agent"]["resumes"] >= 1, 30,
                            "the broker to count the resume")
    hub.api("DELETE", "/hub/api/users/btslurm1/server")
    await asyncio.to_thread(wait_until, lambda: squeue() == "", 30, "the job to leave squeue")


@pytest.mark.parametrize("drop_stack", [5], indirect=True)
async def test_a_cut_longer_than_the_grace_period_resets_cleanly_and_new_connections_work(
        drop_stack: tuple[Hub, BrokerProcess], cut_link: None) -> None:
    hub, broker = drop_stack
    assert spawn(hub, "btslurm6")[-1].get("ready")
    (tunnel,) = broker.client.tunnels()
    http, base = user_http(hub, "btslurm6")
    async with http:
        async with kernel(http, base, delete=False) as k:  # no way to delete it while the link is down
            assert await k.execute("1 + 1") == "2"
            link("down")
            # Heartbeat (4 s) + grace (5 s): the broker resets the session's streams; the kernel's
            # WebSocket through the proxy is closed, not left hanging.
            message = await asyncio.wait_for(k.ws.receive(), 30)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert "streams are reset" in broker.proc.log()  # type: ignore[union-attr]
        link("up")
        await asyncio.to_thread(wait_until, lambda: broker.agent_connected(tunnel["id"]), 45,
                                "the agent to reconnect once the link is back")
        async with kernel(http, base) as k:  # new connections work again, same job
            assert await k.execute("6 * 7") == "42"
    assert broker.tunnel(tunnel["id"])["agent"]["resumes"] == 0
    assert len(squeue().splitlines()) == 1
    hub.api("DELETE", "/hub/api/users/btslurm6/server")
    await asyncio.to_thread(wait_until, lambda: squeue() == "", 30, "the job to leave squeue")


def test_a_lost_node_ends_the_server_with_its_reason(lossy_stack: tuple[Hub, BrokerProcess],
                                                     cut_link: None) -> None:
    hub, broker = lossy_stack
    assert spawn(hub, "btslurm7")[-1].get("ready")
    link("down")  # and it stays down: the node is lost
    # The connect command gives up after GRACE seconds without the agent; the hub's next poll finds
    # the server stopped, stops it (the job is cancelled, the tunnel deleted) and says why.
    wait_until(lambda: not hub.api("GET", "/hub/api/users/btslurm7")[1]["servers"], 60,
               "the hub to find the server stopped")
    assert hub.proc is not None
    assert "Server of btslurm7 stopped: connect-to-job command exited with status 5" in hub.proc.log()
    assert "agent" in hub.proc.log().split("Server of btslurm7 stopped:", 1)[1].splitlines()[0]
    wait_until(lambda: broker.client.tunnels() == [], 30, "the tunnel to be deleted")
    # Cancelled: Slurm keeps it COMPLETING until the lost node answers again.
    queue = squeue()
    assert queue == "" or queue.split()[-1] in ("CANCELLED", "COMPLETING"), queue
    link("up")
    # Once the node is back, slurmctld reaches it on its own schedule (seen: under 60 s here, more on
    # a loaded CI run); the next tests need an empty queue.
    wait_until(lambda: squeue() == "", 240, "the cancelled job to leave squeue once the node is back")
