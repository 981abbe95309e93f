"""SlurmTunnelSpawner in a real JupyterHub with the real configurable-http-proxy and our broker.

The batch system is a stand-in at the command boundary (tests/support/fakebatch); the job runs the real
agent and the real jupyterhub-singleuser. The real cluster is the real-Slurm end-to-end tests' job.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.support.hub import CHP, Hub, ensure_user
from tests.support.kernel import kernel
from tests.support.processes import ProcessGroup, free_port, port_open, wait_until
from tests.support.tunnel import BrokerProcess, Pki

pytestmark = pytest.mark.skipif(not CHP.exists(), reason="needs configurable-http-proxy (scripts/test.sh installs it)")


@pytest.fixture
def broker(procs: ProcessGroup, pki: Pki, tmp_path: Path) -> BrokerProcess:
    return BrokerProcess(procs, pki, tmp_path / "broker")


def request_server(hub: Hub, user: str, options: dict[str, str] | None = None) -> list[dict[str, object]]:
    """Ask the hub's API for ``user``'s server (with spawn ``options``); return the progress events."""
    ensure_user(user)
    status, _ = hub.api("POST", f"/hub/api/users/{user}")
    assert status in (201, 409)
    status, body = hub.api("POST", f"/hub/api/users/{user}/server", options)
    assert status in (201, 202), body
    return hub.progress(user)


def spawn(hub: Hub, user: str) -> list[dict[str, object]]:
    events = request_server(hub, user)
    assert events and events[-1].get("ready"), events
    return events


def stop(hub: Hub, user: str, broker: BrokerProcess | None = None) -> None:
    """Stop ``user``'s server through the hub's API: the job is cancelled (and, given the broker, the
    tunnel deleted)."""
    status, _ = hub.api("DELETE", f"/hub/api/users/{user}/server")
    assert status in (202, 204)
    wait_until(lambda: not hub.jobs_running(), 30, "the job to be cancelled")
    if broker is not None:
        wait_until(lambda: broker.client.tunnels() == [], 30, "the tunnel to be deleted")


def notebook_status(hub: Hub, user: str) -> dict[str, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{hub.port}/user/{user}/api/status")
    req.add_header("Authorization", f"token {hub.token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        result: dict[str, object] = json.load(resp)
        return result


def test_spawn_reach_the_notebook_through_the_broker_and_stop(
    procs: ProcessGroup, broker: BrokerProcess, tmp_path: Path
) -> None:
    hub = Hub(procs, tmp_path / "hub", broker, pending=2, log_level="DEBUG")
    events = spawn(hub, "btalice")
    messages = [str(e.get("message", "")) for e in events]
    assert any(re.search(r"Job \d+ queued: Resources", m) for m in messages), messages
    assert any("running on localhost" in m for m in messages), messages

    # The proxy points at the hub-side end of the tunnel, not at the execute host.
    (tunnel,) = broker.client.tunnels()
    (exposure,) = tunnel["exposures"]
    assert tunnel["agent"]["connected"] and tunnel["name"] == "btalice"
    assert hub.route_target("btalice") == f"http://127.0.0.1:{exposure['port']}"
    assert "started" in notebook_status(hub, "btalice")

    # The job got its credentials through the environment, not through the script.
    (job,) = hub.jobs_running()
    script = (hub.batch_dir / f"{job}.sh").read_text()
    env = json.loads((hub.batch_dir / f"{job}.env.json").read_text())
    token = env["BATCHTUNNEL_TOKEN"]
    assert token.startswith(tunnel["id"] + ".") and token not in script
    assert "batchtunnel agent --" in script
    assert env["JUPYTERHUB_SERVICE_URL"].startswith("http://127.0.0.1:")  # notebook on loopback
    hub_log = hub.proc.log()  # type: ignore[union-attr]
    assert "[D " in hub_log and token not in hub_log and token.partition(".")[2] not in hub_log

    stop(hub, "btalice", broker)
    assert not port_open(exposure["port"])

    # While the job was pending, one loop asked the batch system (batchspawner's, every
    # startup_poll_interval = 0.2 s), not two: a scheduler's query load is what admins watch.
    queries = [line.split() for line in (hub.batch_dir / "queries.log").read_text().splitlines()]
    pending = [float(t) for t, j, state in queries if j == job and state == "pending"]
    gaps = [b - a for a, b in itertools.pairwise(pending)]
    assert len(pending) >= 5 and min(gaps) >= 0.19, (len(pending), sorted(gaps)[:3])
    print(f"status queries for job {job}: {len([q for q in queries if q[1] == job])} "
          f"({len(pending)} while pending 2 s)")


def test_port_report_accepts_only_the_port(procs: ProcessGroup, broker: BrokerProcess, tmp_path: Path) -> None:
    hub = Hub(procs, tmp_path / "hub", broker)
    spawn(hub, "btbob")
    (job,) = hub.jobs_running()
    job_token = json.loads((hub.batch_dir / f"{job}.env.json").read_text())["JUPYTERHUB_API_TOKEN"]
    marker = tmp_path / "pwned"
    status, body = hub.api("POST", "/hub/api/batchspawner",
                           {"port": 1234, "batch_cancel_cmd": f"touch {marker}", "exec_prefix": ""},
                           token=job_token)
    assert status == 400 and "only 'port' may be reported" in json.dumps(body)
    status, _ = hub.api("POST", "/hub/api/batchspawner", {"port": "80; rm -rf /"}, token=job_token)
    assert status == 400
    # Stopping still runs the configured scancel, not the posted command.
    stop(hub, "btbob")
    assert not marker.exists()


def test_notebook_survives_a_hub_kill9_and_restart(
    procs: ProcessGroup, broker: BrokerProcess, tmp_path: Path
) -> None:
    hub = Hub(procs, tmp_path / "hub", broker)
    spawn(hub, "btcarol")
    (job,) = hub.jobs_running()
    started = notebook_status(hub, "btcarol")["started"]

    hub.kill9()
    hub.start()
    # The spawner re-attached: the same job, the same notebook, reachable through the proxy.
    wait_until(lambda: hub.api("GET", "/hub/api/users/btcarol")[1]["servers"].get("", {}).get("ready"), 60,
               "the hub to find the server running")
    assert hub.jobs_running() == [job]
    assert notebook_status(hub, "btcarol")["started"] == started
    stop(hub, "btcarol", broker)  # the tunnel is known from the state the restarted hub loaded


def test_options_are_validated_and_reach_the_script(
    procs: ProcessGroup, broker: BrokerProcess, tmp_path: Path
) -> None:
    hub = Hub(procs, tmp_path / "hub", broker, options_cores_max=4, options_partitions=["cpu", "gpu"])
    # Refused at the request (our apply_user_options hook), with every reason, before anything starts.
    ensure_user("btdave")
    hub.api("POST", "/hub/api/users/btdave")
    status, body = hub.api("POST", "/hub/api/users/btdave/server", {"cores": "64", "partition": "gpu; id"})
    message = str(body.get("message"))
    assert status == 400 and message.startswith("Invalid spawn options:"), (status, body)
    assert "cores: 64 is more than the 4 CPU cores allowed" in message
    assert "partition: 'gpu; id' is not one of: cpu, gpu" in message
    assert not hub.jobs_running() and broker.client.tunnels() == []  # nothing submitted, no tunnel left

    options = {"cores": "2", "memory_gb": "3", "runtime_minutes": "90", "partition": "gpu"}
    events = request_server(hub, "btdave", options)
    assert events[-1].get("ready")
    # Every event moves the spawn page's bar, never backwards; JupyterHub's own "unhandled
    # user_options" warning is gone (the options are checked by our apply_user_options).
    progress = [int(e["progress"]) for e in events if "progress" in e]  # type: ignore[call-overload]
    assert len(progress) == len(events) and progress == sorted(progress) and progress[-1] == 100, events
    assert "unhandled user_options" not in hub.proc.log()  # type: ignore[union-attr]
    (job,) = hub.jobs_running()
    script = (hub.batch_dir / f"{job}.sh").read_text()
    for line in ("#SBATCH --cpus-per-task=2", "#SBATCH --mem=3G", "#SBATCH --time=01:30:00",
                 "#SBATCH --partition=gpu"):
        assert line in script
    stop(hub, "btdave")


def test_single_outbound_port_mode(procs: ProcessGroup, pki: Pki, tmp_path: Path) -> None:
    hub_api_port = free_port()
    broker = BrokerProcess(procs, pki, tmp_path / "broker", "--hub-api", f"127.0.0.1:{hub_api_port}")
    hub = Hub(procs, tmp_path / "hub", broker, api_port=hub_api_port, hub_api_via_tunnel=True)
    spawn(hub, "bterin")
    (tunnel,) = broker.client.tunnels()
    # The job's port report (and activity) reached the hub through the agent and the broker.
    assert tunnel["agent"]["streams_from_agent"] >= 1
    (job,) = hub.jobs_running()
    assert "batchtunnel agent --hub-api-via-tunnel --" in (hub.batch_dir / f"{job}.sh").read_text()
    assert "started" in notebook_status(hub, "bterin")
    stop(hub, "bterin")


def test_torque_spawner_end_to_end(procs: ProcessGroup, broker: BrokerProcess, tmp_path: Path) -> None:
    # This site pins the broker's certificate instead of giving jobs the CA, and lets credentials expire.
    from batchtunnel.certs import authority

    pin = authority.fingerprint(authority.load_cert(broker.pki.cert))
    hub = Hub(procs, tmp_path / "hub", broker, backend="torque", pending=1, options_cores_max=4,
              broker_ca_file="", broker_fingerprints=[pin], tunnel_lifetime=3600.0)
    events = request_server(hub, "btfrank", {"cores": "3", "memory_gb": "5"})
    assert events[-1].get("ready"), events
    messages = [str(e.get("message", "")) for e in events]
    assert any(re.search(r"Job \d+\.fakepbs queued", m) for m in messages), messages
    assert any("running on localhost" in m for m in messages), messages
    (job,) = hub.jobs_running()
    script = (hub.batch_dir / f"{job}.sh").read_text()
    assert "#PBS -l nodes=1:ppn=3" in script and "#PBS -l mem=5gb" in script
    assert "started" in notebook_status(hub, "btfrank")
    (tunnel,) = broker.client.tunnels()
    assert tunnel["expires"] == pytest.approx(tunnel["created"] + 3600, abs=1)
    stop(hub, "btfrank", broker)


def test_a_job_dying_after_it_ran_fails_the_spawn_quickly(
    procs: ProcessGroup, broker: BrokerProcess, tmp_path: Path
) -> None:
    # batchspawner stops watching a job once it is RUNNING and only waits for the port: a job that
    # dies then would hang the spawn until start_timeout (120 s here). It must fail in seconds.
    hub = Hub(procs, tmp_path / "hub", broker, options_environments={"dies": "sleep 1.5; exit 3"})
    ensure_user("btgrace")
    hub.api("POST", "/hub/api/users/btgrace")
    started = time.monotonic()
    status, _ = hub.api("POST", "/hub/api/users/btgrace/server", {"environment": "dies"})
    assert status in (201, 202)
    wait_until(lambda: "ended before its notebook started" in hub.proc.log(), 30,  # type: ignore[union-attr]
               "the spawn to fail")
    assert time.monotonic() - started < 30
    wait_until(lambda: broker.client.tunnels() == [], 10, "the tunnel to be deleted")


async def test_open_connections_live_through_a_hub_kill9(
    procs: ProcessGroup, broker: BrokerProcess, tmp_path: Path
) -> None:
    # The proxy runs on its own, as at a site; the hub is not on the data path (proxy -> broker -> agent).
    hub = Hub(procs, tmp_path / "hub", broker, external_proxy=True)
    spawn(hub, "btgina")
    base = f"http://127.0.0.1:{hub.port}/user/btgina"
    size = 100 * 1024 * 1024
    async with aiohttp.ClientSession(headers={"Authorization": f"token {hub.token}"}) as http, \
            kernel(http, base) as k:
        digest = await k.execute(
            f"import hashlib, os; data = os.urandom({size}); open('big.bin', 'wb').write(data); "
            "hashlib.sha256(data).hexdigest()", timeout=120)
        assert await k.execute("1 + 1") == "2"
        async with http.get(f"{base}/files/big.bin") as download:
            assert download.status == 200
            received = hashlib.sha256(await download.content.readexactly(1024 * 1024))

            hub.kill9()  # mid-download, kernel WebSocket open
            assert await k.execute("2 + 3") == "5"  # while the hub is down
            await asyncio.to_thread(hub.start)
            while chunk := await download.content.read(1024 * 1024):
                received.update(chunk)
        assert repr(received.hexdigest()) == digest
        # The same WebSocket, after the restart; and the spawner re-attached to the same job.
        assert await k.execute("6 * 7") == "42"
    wait_until(lambda: hub.api("GET", "/hub/api/users/btgina")[1]["servers"].get("", {}).get("ready"), 60,
               "the hub to find the server running")
    stop(hub, "btgina")
