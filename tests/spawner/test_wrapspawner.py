"""Several clusters behind one hub with wrapspawner's ProfilesSpawner (batch systems: the stand-in).

Two users on two "clusters" (a Slurm and a Torque profile, the classes named as strings) at once, both
notebooks through the one broker. The hardened port-report handler answers, and the log says how it
got there: JupyterHub imports installed spawner classes at start (its entry points), so it is in the
routes from the start; a hub whose routes were built without it (batchtunnel not installed as a
package, or imported late by a wrapper) gets it added at the first spawn.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.hub import CHP, FAKEBATCH, Hub, ensure_user
from tests.support.processes import ProcessGroup, wait_until
from tests.support.tunnel import BrokerProcess

from .test_jupyterhub import notebook_status, request_server

pytestmark = pytest.mark.skipif(not CHP.exists(), reason="needs configurable-http-proxy (scripts/test.sh installs it)")

SHARED = ("broker_url", "broker_api_url", "broker_admin_token_file", "broker_ca_file", "agent_cmd",
          "connect_to_job_cmd", "batchspawner_singleuser_cmd", "startup_poll_interval", "exec_prefix")
"""Settings the test hub gives SlurmTunnelSpawner, copied to TorqueTunnelSpawner's section."""


LATE = (
    "# As if batchtunnel.spawner came after the hub built its routes: batchspawner's handler in the list.",
    "from batchspawner.api import BatchSpawnerAPIHandler",
    "from jupyterhub.apihandlers import default_handlers",
    "default_handlers[:] = [h for h in default_handlers if h[0] != r'/api/batchspawner']",
    "default_handlers.append((r'/api/batchspawner', BatchSpawnerAPIHandler))",
)


def profiles_hub(procs: ProcessGroup, broker: BrokerProcess, workdir: Path, *extra: str) -> Hub:
    torque = {"batch_submit_cmd": f"{FAKEBATCH}/qsub", "batch_query_cmd": f"{FAKEBATCH}/qstat -x {{job_id}}",
              "batch_cancel_cmd": f"{FAKEBATCH}/qdel {{job_id}}", "options_enabled": False, "req_nprocs": "2",
              "req_memory": "3gb"}
    lines = (
        "c.JupyterHub.spawner_class = 'wrapspawner.ProfilesSpawner'",
        "c.ProfilesSpawner.profiles = ["
        "  ('Cluster A (Slurm): 1 core', 'a-small', 'batchtunnel.spawner.SlurmTunnelSpawner',"
        "   {'options_enabled': False, 'req_nprocs': '1', 'req_memory': '1G'}),"
        f"  ('Cluster B (Torque): 2 cores', 'b-medium', 'batchtunnel.spawner.TorqueTunnelSpawner', {torque!r}),"
        "]",
        *(f"c.TorqueTunnelSpawner.{key} = c.SlurmTunnelSpawner.{key}" for key in SHARED),
        *extra,
    )
    return Hub(procs, workdir, broker, hub_config=lines)


def test_two_users_on_two_clusters_through_one_broker(procs: ProcessGroup, broker: BrokerProcess,
                                                      tmp_path: Path) -> None:
    hub = profiles_hub(procs, broker, tmp_path / "hub")
    for user in ("btwrap1", "btwrap2"):
        ensure_user(user)
    a = request_server(hub, "btwrap1", {"profile": "a-small"})
    b = request_server(hub, "btwrap2", {"profile": "b-medium"})
    assert a[-1].get("ready") and b[-1].get("ready"), (a, b)
    assert "started" in notebook_status(hub, "btwrap1") and "started" in notebook_status(hub, "btwrap2")
    tunnels = {t["name"]: t for t in broker.client.tunnels()}
    assert set(tunnels) == {"btwrap1", "btwrap2"} and all(t["agent"]["connected"] for t in tunnels.values())

    scripts = {job: (hub.batch_dir / f"{job}.sh").read_text() for job in hub.jobs_running()}
    slurm = [s for s in scripts.values() if "#SBATCH --cpus-per-task=1" in s]
    torque = [s for s in scripts.values() if "#PBS -l nodes=1:ppn=2" in s and "#PBS -l mem=3gb" in s]
    assert len(slurm) == 1 and len(torque) == 1, scripts

    log = hub.proc.log()  # type: ignore[union-attr]
    assert "Port reports at /hub/api/batchspawner go to batchtunnel's hardened handler" in log
    assert_hardened(hub, next(j for j, s in scripts.items() if "#PBS" in s))

    for user in ("btwrap1", "btwrap2"):
        hub.api("DELETE", f"/hub/api/users/{user}/server")
    wait_until(lambda: not hub.jobs_running(), 30, "both jobs to be cancelled")
    wait_until(lambda: broker.client.tunnels() == [], 30, "both tunnels to be deleted")


def assert_hardened(hub: Hub, job: str) -> None:
    """A port report that tries to set more than the port is refused (batchspawner's would set it)."""
    job_token = json.loads((hub.batch_dir / f"{job}.env.json").read_text())["JUPYTERHUB_API_TOKEN"]
    status, body = hub.api("POST", "/hub/api/batchspawner", {"port": 1234, "exec_prefix": "touch /tmp/x"},
                           token=job_token)
    assert status == 400 and "only 'port' may be reported" in json.dumps(body)


def test_a_hub_that_started_without_the_hardened_handler_gets_it_at_the_first_spawn(
        procs: ProcessGroup, broker: BrokerProcess, tmp_path: Path) -> None:
    hub = profiles_hub(procs, broker, tmp_path / "hub", *LATE)
    ensure_user("btwrap3")
    events = request_server(hub, "btwrap3", {"profile": "b-medium"})
    assert events[-1].get("ready"), events  # the job's own (port-only) report went through
    log = hub.proc.log()  # type: ignore[union-attr]
    assert "The hub started before batchtunnel.spawner was imported" in log
    assert "port reports at /hub/api/batchspawner now go to batchtunnel's hardened handler" in log
    (job,) = hub.jobs_running()
    assert_hardened(hub, job)
    hub.api("DELETE", "/hub/api/users/btwrap3/server")
    wait_until(lambda: not hub.jobs_running(), 30, "the job to be cancelled")

