"""One hub, two real clusters, one broker: wrapspawner's ProfilesSpawner offers a Slurm profile (the
cluster next to the hub) and a Grid Engine one (a remote cluster, reached as sites reach one: the hub
submits over ssh to its login node, a real sshd in that cluster's namespace, batchspawner's
exec_prefix). Each cluster has its own spawner configuration; both clusters' agents dial the one
broker, each on the hub-side address its nodes can reach. Two users at once, one on each."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import Hub, ensure_user
from tests.support.kernel import kernel
from tests.support.processes import ProcessGroup, free_port, wait_until
from tests.support.tunnel import BrokerProcess, Pki

from .conftest import HUB_SIDE, REQUIREMENTS, cell, cluster, empty_queue
from .test_gridengine import MASTER, NODE, qstat
from .test_slurm import squeue, user_http

pytestmark = REQUIREMENTS

SLURM_USER, GE_USER = "btslurm2", "btge2"
SHARED = ("broker_api_url", "broker_admin_token_file", "broker_ca_file", "agent_cmd", "connect_to_job_cmd",
          "batchspawner_singleuser_cmd", "startup_poll_interval", "cmd", "hub_api_via_tunnel")
"""The test hub's SlurmTunnelSpawner settings that the Grid Engine cluster shares (the rest is its own)."""


def authorize(key: Path, user: str) -> None:
    """Let the hub's key log in as ``user`` (what a site does for its hub's service account)."""
    ensure_user(user)
    entry = pwd.getpwnam(user)
    ssh = Path(entry.pw_dir) / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    for path in (ssh, ssh / "authorized_keys"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    (ssh / "authorized_keys").chmod(0o600)


@pytest.fixture
def two_clusters(slurm: str, gridengine: None, procs: ProcessGroup, pki: Pki,
                 tmp_path: Path) -> Iterator[tuple[Hub, BrokerProcess]]:
    empty_queue()
    wait_until(lambda: qstat() == "", 60, "the Grid Engine queue to empty")
    key = tmp_path / "hub_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorize(key, GE_USER)
    cell("login", "on")
    hub_api_port = free_port()
    broker = BrokerProcess(procs, pki, tmp_path / "broker", "--hub-api", f"127.0.0.1:{hub_api_port}",
                           listen_host="0.0.0.0", public_host=HUB_SIDE)
    cluster("firewall", "strict", str(broker.agent_port))
    cell("firewall", str(broker.agent_port))
    ssh = (f"ssh -i {key} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
           "-o LogLevel=ERROR -o SendEnv=BATCHTUNNEL_* -o SendEnv=JUPYTERHUB_* -o SendEnv=JPY_* "
           f"{{username}}@{NODE}")
    gridengine = {"options_enabled": False, "exec_prefix": ssh,
                  "broker_url": broker.agent_url.replace(HUB_SIDE, MASTER)}
    lines = (
        "c.JupyterHub.spawner_class = 'wrapspawner.ProfilesSpawner'",
        "c.ProfilesSpawner.profiles = ["
        "  ('Cluster A (Slurm): 1 core, 1 GB', 'slurm', 'batchtunnel.spawner.SlurmTunnelSpawner',"
        "   {'options_enabled': False, 'req_nprocs': '1', 'req_memory': '1G'}),"
        f"  ('Cluster B (Grid Engine, remote)', 'gridengine', 'batchtunnel.spawner.GridEngineTunnelSpawner', "
        f"{gridengine!r}),"
        "]",
        *(f"c.GridEngineTunnelSpawner.{name} = c.SlurmTunnelSpawner.{name}" for name in SHARED),
    )
    hub = Hub(procs, tmp_path / "hub", broker, backend="real-slurm", api_port=hub_api_port,
              hub_api_via_tunnel=True, external_proxy=True, hub_config=lines)
    try:
        yield hub, broker
    finally:
        for user in (SLURM_USER, GE_USER):
            hub.api("DELETE", f"/hub/api/users/{user}/server")
        subprocess.run(["scancel", "--partition=debug"], capture_output=True)
        subprocess.run(["qdel", "-u", GE_USER], capture_output=True)
        cluster("firewall", "default")
        cell("firewall")
        cell("login", "off")
        empty_queue()


async def test_one_user_on_each_cluster_at_once_through_one_broker(
        two_clusters: tuple[Hub, BrokerProcess]) -> None:
    hub, broker = two_clusters
    for user, profile in ((SLURM_USER, "slurm"), (GE_USER, "gridengine")):
        ensure_user(user)
        hub.api("POST", f"/hub/api/users/{user}")
        status, body = hub.api("POST", f"/hub/api/users/{user}/server", {"profile": profile})
        assert status in (201, 202), body
    events = {user: await asyncio.to_thread(hub.progress, user) for user in (SLURM_USER, GE_USER)}
    assert all(e[-1].get("ready") for e in events.values()), events

    # Each job on its own cluster, as its user; both agents connected to the one broker.
    assert [line.split()[1:] for line in squeue().splitlines()] == [[SLURM_USER, "RUNNING"]]
    assert [line.split()[1:] for line in qstat().splitlines()] == [[GE_USER, "r"]]
    tunnels = {t["name"]: t for t in broker.client.tunnels()}
    assert set(tunnels) == {SLURM_USER, GE_USER} and all(t["agent"]["connected"] for t in tunnels.values())
    for user, address in ((SLURM_USER, "10.213.7.2"), (GE_USER, NODE)):
        http, base = user_http(hub, user)
        async with http, kernel(http, base) as k:  # the notebook runs on that cluster's node
            assert await k.execute(f"{address!r} in open('/proc/net/fib_trie').read()") == "True"

    for user in (SLURM_USER, GE_USER):
        hub.api("DELETE", f"/hub/api/users/{user}/server")
    await asyncio.to_thread(wait_until, lambda: squeue() == "" and qstat() == "", 60, "both jobs to end")
    await asyncio.to_thread(wait_until, lambda: broker.client.tunnels() == [], 30, "both tunnels to be deleted")
