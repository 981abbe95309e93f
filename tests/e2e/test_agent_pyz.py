"""The one-file agent on the real Slurm cluster, in a job environment with no batchtunnel at all.

The hub inlines batchtunnel-agent.pyz into the batch script (``agent_zipapp_inline``); the job unpacks
it into its TMPDIR and runs it with Debian 11's python3.9 (no batchtunnel, no websockets); the
notebook comes from .jobenv-bare (jupyterhub, batchspawner, jupyter_server, ipykernel: no batchtunnel).
"""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import ROOT, Hub
from tests.support.kernel import kernel
from tests.support.processes import ProcessGroup, wait_until
from tests.support.python39 import build_pyz, python39
from tests.support.tunnel import BrokerProcess, Pki

from .conftest import HUB_SIDE, REQUIREMENTS, empty_queue
from .test_slurm import spawn, squeue, user_http

BARE = ROOT / ".jobenv-bare" / "bin"
pytestmark = [*REQUIREMENTS, pytest.mark.skipif(not (BARE / "jupyterhub-singleuser").exists(),
                                                 reason="needs .jobenv-bare (scripts/setup.sh with SETUP_JOBENV=1)")]

USER = "btslurm4"
UNPACKED = "/tmp/batchtunnel-agent.*"  # where the job unpacks the agent (no TMPDIR in the test jobs)

FIND_AGENT = """
import os
pid, found = os.getpid(), None
while pid > 1 and found is None:
    args = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')
    if len(args) > 1 and b'batchtunnel-agent.' in args[1]:
        found = os.readlink(f'/proc/{pid}/exe')
    pid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])
found
"""


def python39_executable() -> str:
    return os.path.realpath(python39()[0])


@pytest.fixture
def pyz_stack(slurm: str, procs: ProcessGroup, pki: Pki, tmp_path: Path) -> Iterator[tuple[Hub, BrokerProcess]]:
    empty_queue()
    interpreter, websockets = python39()
    pyz = tmp_path / "batchtunnel-agent.pyz"  # on the hub only: the script carries it
    build_pyz(pyz, "--websockets", websockets)
    broker = BrokerProcess(procs, pki, tmp_path / "broker", listen_host=HUB_SIDE, public_host=HUB_SIDE)
    hub = Hub(procs, tmp_path / "hub", broker, backend="real-slurm", hub_ip=HUB_SIDE, external_proxy=True,
              agent_zipapp=str(pyz), agent_zipapp_inline=True, agent_python=interpreter,
              batchspawner_singleuser_cmd=str(BARE / "batchspawner-singleuser"),
              cmd=[str(BARE / "jupyterhub-singleuser")])
    yield hub, broker
    hub.api("DELETE", f"/hub/api/users/{USER}/server")
    subprocess.run(["scancel", "--partition=debug"], capture_output=True)
    empty_queue()


async def test_the_inlined_pyz_agent_serves_a_notebook_from_an_environment_without_batchtunnel(
        pyz_stack: tuple[Hub, BrokerProcess]) -> None:
    hub, broker = pyz_stack
    before = set(glob.glob(UNPACKED))
    interpreter = python39_executable()
    events = spawn(hub, USER)
    assert events[-1].get("ready"), events
    http, base = user_http(hub, USER)
    async with http, kernel(http, base) as k:
        assert await k.execute("import importlib.util; importlib.util.find_spec('batchtunnel') is None") == "True"
        agent_python = await k.execute(FIND_AGENT)
        assert agent_python == repr(interpreter)  # the agent: python3.9 running the pyz
        assert await k.execute("6 * 7") == "42"
    assert len(set(glob.glob(UNPACKED)) - before) == 1
    hub.api("DELETE", f"/hub/api/users/{USER}/server")
    wait_until(lambda: squeue() == "", 30, "the job to end")
    wait_until(lambda: set(glob.glob(UNPACKED)) <= before, 10, "the job to remove its copy of the agent")
    assert broker.client.tunnels() == []
