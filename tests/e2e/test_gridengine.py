"""The same end-to-end checks on a second real batch system: Debian's Grid Engine 8.1.9
(scripts/gridengine-cluster.sh), its execution host in a network namespace that lets in only qmaster
and lets out only qmaster's port and the broker's. GridEngineTunnelSpawner, batchspawner's own Grid
Engine commands (qsub, qstat -xml, qdel) run as each user, as a site runs them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pwd
import secrets
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import Hub, ensure_user
from tests.support.processes import ProcessGroup, free_port, port_open, wait_until
from tests.support.tunnel import BrokerProcess, Pki

from .conftest import REQUIREMENTS, cell, namespace_processes
from .test_slurm import execute, get, spawn, user_token

pytestmark = REQUIREMENTS

MASTER, NODE = "10.213.8.1", "10.213.8.2"
USERS = ("btge1", "btge2")


def qstat() -> str:
    """Every user's jobs: "JOBID USER STATE" lines."""
    done = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True, timeout=30)
    return "\n".join(" ".join(line.split()[i] for i in (0, 3, 4)) for line in done.stdout.splitlines()[2:])


@pytest.fixture
def ge_stack(gridengine: None, procs: ProcessGroup, pki: Pki, tmp_path: Path) -> Iterator[tuple[Hub, BrokerProcess]]:
    wait_until(lambda: qstat() == "", 60, "the Grid Engine queue to empty")
    hub_api_port = free_port()
    broker = BrokerProcess(procs, pki, tmp_path / "broker", "--hub-api", f"127.0.0.1:{hub_api_port}",
                           listen_host=MASTER, public_host=MASTER)
    cell("firewall", str(broker.agent_port))  # the node dials qmaster and the broker, nothing else
    hub = Hub(procs, tmp_path / "hub", broker, backend="real-gridengine", api_port=hub_api_port,
              hub_api_via_tunnel=True, external_proxy=True, options_memory_max_gb=2,
              options_environments={"default": "", "broken": "echo 'module python/9 not found' >&2; exit 3"})
    yield hub, broker
    for user in USERS:
        hub.api("DELETE", f"/hub/api/users/{user}/server")
    subprocess.run(["qdel", "-u", ",".join(USERS)], capture_output=True)
    wait_until(lambda: qstat() == "", 60, "the Grid Engine queue to empty")
    cell("firewall")


def node_processes() -> list[str]:
    return sorted(set(namespace_processes("btge")))


async def test_a_notebook_on_a_firewalled_grid_engine_node(ge_stack: tuple[Hub, BrokerProcess]) -> None:
    hub, broker = ge_stack
    events = spawn(hub, "btge1")
    assert events[-1].get("ready"), events
    assert any("running on btge1" in str(e.get("message")) for e in events), events
    (job,) = [line.split()[0] for line in qstat().splitlines()]
    assert qstat().split() == [job, "btge1", "r"]

    (tunnel,) = broker.client.tunnels()
    (exposure,) = tunnel["exposures"]
    with pytest.raises(OSError):  # the premise: the notebook's own port on the node is out of reach
        __import__("socket").create_connection((NODE, exposure["rport"]), timeout=2).close()
    token = user_token(hub, "btge1")
    assert "started" in json.loads(get(hub, "/user/btge1/api/status", token))
    assert await execute(hub, "btge1", token, "import socket; socket.gethostname()") == "'btge1'"

    # 50 MiB written in the notebook's directory downloads through the hub, byte for byte.
    home = Path(pwd.getpwnam("btge1").pw_dir)
    data = secrets.token_bytes(50 * 1024 * 1024)
    (home / "big.bin").write_bytes(data)
    os.chown(home / "big.bin", pwd.getpwnam("btge1").pw_uid, pwd.getpwnam("btge1").pw_gid)
    body = await asyncio.to_thread(get, hub, "/user/btge1/files/big.bin", token, 120)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()

    # Stop: the job leaves the queue, the tunnel and its port are gone, only execd is left on the node.
    status, _ = hub.api("DELETE", "/hub/api/users/btge1/server")
    assert status in (202, 204)
    await asyncio.to_thread(wait_until, lambda: job not in qstat(), 60, "the job to leave the queue")
    await asyncio.to_thread(wait_until, lambda: broker.client.tunnels() == [], 30, "the tunnel to be deleted")
    assert not port_open(exposure["port"])
    await asyncio.to_thread(wait_until, lambda: node_processes() == ["sge_execd"], 30,
                            "only sge_execd left in the node's namespace")


def test_two_users_each_reach_only_their_own_server(ge_stack: tuple[Hub, BrokerProcess]) -> None:
    hub, broker = ge_stack
    for user in USERS:
        assert spawn(hub, user)[-1].get("ready")
    assert sorted(line.split()[1] for line in qstat().splitlines()) == list(USERS)
    for user in USERS:
        token = user_token(hub, user)
        assert "started" in json.loads(get(hub, f"/user/{user}/api/status", token))
        other = USERS[1] if user == USERS[0] else USERS[0]
        with pytest.raises(urllib.error.HTTPError) as exc:
            get(hub, f"/user/{other}/api/status", token)
        exc.value.close()
        assert exc.value.code == 403
    assert len(broker.client.tunnels()) == 2


def test_a_job_that_dies_early_is_reported_with_its_reason(ge_stack: tuple[Hub, BrokerProcess]) -> None:
    hub, broker = ge_stack
    ensure_user("btge1")
    started = time.monotonic()
    events = spawn(hub, "btge1", {"memory_gb": "1", "environment": "broken"})
    if events[-1].get("failed"):
        message = str(events[-1].get("message"))
    else:  # the progress stream may close before its final event; the hub's log has the message
        message = str(wait_until(lambda: next((x for x in hub.proc.log().splitlines()  # type: ignore[union-attr]
                                                if "ended before its notebook started" in x), None), 60,
                                 "the spawn failure"))
    assert time.monotonic() - started < 60
    assert "ended before its notebook started: exit status 3" in message, message
    assert "module python/9 not found" in message
    assert f"its output ({pwd.getpwnam('btge1').pw_dir}/.jupyterhub.sge.out)" in message
    assert broker.client.tunnels() == []
