"""The real Slurm cluster (scripts/slurm-cluster.sh) and a JupyterHub + broker stack on its hub side."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import CHP, ROOT, Hub
from tests.support.processes import ProcessGroup, wait_until
from tests.support.tunnel import BrokerProcess, Pki

HUB_SIDE = "10.213.7.1"
NODE = "10.213.7.2"
CLUSTER = ROOT / "scripts" / "slurm-cluster.sh"
CELL = ROOT / "scripts" / "gridengine-cluster.sh"

REQUIREMENTS = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the Slurm cluster needs root"),
    pytest.mark.skipif(not CHP.exists(), reason="needs configurable-http-proxy (scripts/test.sh installs it)"),
]


def _script(path: Path, *args: str) -> str:
    done = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def cluster(*args: str) -> str:
    """scripts/slurm-cluster.sh ARGS; its output."""
    return _script(CLUSTER, *args)


def namespace_processes(namespace: str) -> list[str]:
    """The names of the processes in a network namespace (a test cluster's node), sorted."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            pass
    return sorted(names)


@pytest.fixture(scope="session")
def slurm() -> Iterator[str]:
    conf = cluster("up").strip().split("=", 1)[1]
    os.environ["SLURM_CONF"] = conf
    yield conf
    cluster("down")


@pytest.fixture
def stack(slurm: str, procs: ProcessGroup, pki: Pki, tmp_path: Path) -> Iterator[tuple[Hub, BrokerProcess]]:
    empty_queue()  # a previous test's cancelled job may still be completing
    broker = BrokerProcess(procs, pki, tmp_path / "broker", listen_host=HUB_SIDE, public_host=HUB_SIDE)
    # The proxy runs on its own, as sites run it: it lives through a hub restart.
    hub = Hub(procs, tmp_path / "hub", broker, backend="real-slurm", hub_ip=HUB_SIDE, options_memory_max_gb=2,
              options_environments={"default": "", "broken": "echo 'module python/9 not found' >&2; exit 3"},
              external_proxy=True)
    yield hub, broker
    for user in ("btslurm1", "btslurm2", "btslurm5", "btbrowser"):
        hub.api("DELETE", f"/hub/api/users/{user}/server")
    subprocess.run(["scancel", "--partition=debug"], capture_output=True)  # the test cluster's jobs only
    empty_queue()


def empty_queue() -> None:
    wait_until(lambda: subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip() == "",
               60, "the Slurm queue to empty")


def cell(*args: str) -> str:
    """scripts/gridengine-cluster.sh ARGS; its output."""
    return _script(CELL, *args)


@pytest.fixture(scope="session")
def gridengine() -> Iterator[None]:
    """The Grid Engine cell of scripts/gridengine-cluster.sh, up for the session."""
    for line in cell("up").split():
        key, value = line.split("=", 1)
        os.environ[key] = value  # SGE_ROOT, SGE_CELL: GridengineSpawner passes them to qsub
    yield
    cell("down")

