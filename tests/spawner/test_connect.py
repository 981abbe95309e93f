"""The connect-to-job step: rendering for every backend, and its commands' lifecycle with real processes."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from batchspawner.batchspawner import JobStatus
from batchtunnel.spawner import (
    CondorTunnelSpawner,
    ConnectToJobError,
    ConnectToJobMixin,
    GridEngineTunnelSpawner,
    LsfTunnelSpawner,
    MoabTunnelSpawner,
    PBSTunnelSpawner,
    SlurmTunnelSpawner,
    TorqueTunnelSpawner,
)
from batchtunnel.spawner.background import _group_alive
from traitlets import default

from tests.support.processes import BIN, ProcessGroup, free_port, port_open, wait_until

BACKENDS = [SlurmTunnelSpawner, TorqueTunnelSpawner, MoabTunnelSpawner, PBSTunnelSpawner, LsfTunnelSpawner,
            GridEngineTunnelSpawner, CondorTunnelSpawner]


def user(name: str = "root") -> SimpleNamespace:
    return SimpleNamespace(name=name, escaped_name=name, url=f"/user/{name}/", id=1, spawners={})


@pytest.mark.parametrize("cls", BACKENDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "template, expected",
    [
        ("ssh -N -L {port}:localhost:{rport} {host}", "ssh -N -L {P}:localhost:8888 node1"),
        ("ssh -N -L {{ port }}:localhost:{{rport}} {{host}}", "ssh -N -L {P}:localhost:8888 node1"),
        ("condor_ssh_to_job {job_id} -L {port}:localhost:{port} # {username}",
         "condor_ssh_to_job 42 -L 8888:localhost:8888 # root"),
        ("batchtunnel connect --tunnel {tunnel_id} --port {port} --rport {rport}",
         "batchtunnel connect --tunnel tabc --port {P} --rport 8888"),
    ],
)
def test_rendering_for_every_backend(cls: type, template: str, expected: str) -> None:
    spawner = cls(user=user(), req_keepvars="PATH", connect_to_job_cmd=template)
    spawner.job_id, spawner.tunnel_id = "42", "tabc"
    command, port = spawner.render_connect_cmd("node1", 8888)
    if "rport" in template:
        assert port != 8888  # a free port on the hub; {rport} is the notebook's
    else:
        assert port == 8888
    assert command == expected.replace("{P}", str(port))


def test_moab_uses_moabs_commands_and_torques_script() -> None:
    moab = MoabTunnelSpawner(user=user())
    assert (moab.batch_submit_cmd, moab.batch_cancel_cmd) == ("msub", "mjobctl -c {job_id}")
    assert moab.batch_script == TorqueTunnelSpawner(user=user()).batch_script
    moab.user_options = {"memory_gb": 8}
    assert moab.validated_options()["memory"] == "8gb"


def test_values_are_shell_quoted_and_unknown_variables_refused() -> None:
    spawner = SlurmTunnelSpawner(user=user(), req_keepvars="PATH", connect_to_job_cmd="ssh {host}")
    spawner.job_id = "1"
    assert spawner.render_connect_cmd("n1; touch /tmp/pwned", 1)[0] == "ssh 'n1; touch /tmp/pwned'"
    spawner.connect_to_job_cmd = "ssh {hots}"
    with pytest.raises(ConnectToJobError, match="cannot be rendered"):
        spawner.render_connect_cmd("n1", 1)


def test_default_command_is_our_broker_by_absolute_path() -> None:
    """A hub run by systemd has no PATH naming the installation ("batchtunnel: not found", exit 127)."""
    command = SlurmTunnelSpawner(user=user()).connect_to_job_cmd
    program, _, rest = command.partition(" ")
    assert rest == "connect --tunnel {tunnel_id} --port {port} --rport {rport} --keep-exposure"
    assert os.path.isabs(program) and os.access(program, os.X_OK)
    assert subprocess.run([program, "connect", "--help"], capture_output=True, env={}).returncode == 0


class FakeBatch:
    """Stands in for batchspawner's job handling (its start/poll/stop), not for the connect step."""

    def __init__(self, notebook_port: int = 8888, **config: Any) -> None:
        super().__init__(**config)
        self.user = user()
        self.log = logging.getLogger("test-spawner")
        self.job_id = "42"
        self.notebook_port = notebook_port
        self.stopped = False
        self.job_status = JobStatus.RUNNING
        self.ip, self.port = "", 0

    def get_req_subvars(self) -> dict[str, str]:
        return {"username": self.user.name}

    async def start(self) -> tuple[str, int]:
        return "127.0.0.1", self.notebook_port

    async def poll(self) -> int | None:
        return None

    async def query_job_status(self) -> JobStatus:
        return self.job_status

    async def stop(self, now: bool = False) -> None:
        self.stopped = True

    def get_state(self) -> dict[str, Any]:
        return {"job_id": self.job_id}

    def load_state(self, state: dict[str, Any]) -> None:
        self.job_id = state.get("job_id", "")

    def clear_state(self) -> None:
        self.job_id = ""


class Connecting(ConnectToJobMixin, FakeBatch):
    @default("notebook_ready_timeout")
    def _no_notebook_here(self) -> float:
        return 0.0  # nothing answers HTTP in these tests; test_readiness.py has a notebook that does


async def test_empty_command_behaves_like_plain_batchspawner() -> None:
    spawner = Connecting()
    assert await spawner.start() == ("127.0.0.1", 8888)
    assert spawner.get_state() == {"job_id": "42"}
    assert await spawner.poll() is None


async def test_command_exiting_at_startup_fails_the_spawn_with_its_output() -> None:
    spawner = Connecting(connect_to_job_cmd="echo 'bind: Address already in use' >&2; exit 255",
                         connect_startup_check=0.5)
    with pytest.raises(ConnectToJobError, match="status 255: bind: Address already in use"):
        await spawner.start()


async def test_later_exit_is_reported_by_poll_with_the_reason() -> None:
    spawner = Connecting(connect_to_job_cmd="sleep 0.6; echo tunnel closed by peer; exit 1",
                         connect_startup_check=0.1)
    await spawner.start()
    assert await spawner.poll() is None
    spawner.job_status = JobStatus.NOTFOUND  # the node was lost, and the job with it
    await asyncio.wait_for(spawner._connect.wait(), 10)  # type: ignore[union-attr]
    assert await spawner.poll() == 1
    assert spawner.stop_reason == "connect-to-job command exited with status 1: tunnel closed by peer"
    # JupyterHub will not call stop() for a server poll() reports stopped: the job was ended here.
    assert spawner.stopped
    # JupyterHub polls again (user_stopped, then User.stop): the reason stays the one seen.
    assert await spawner.poll() is None  # FakeBatch's job handling has the last word now
    assert spawner.stop_reason == "connect-to-job command exited with status 1: tunnel closed by peer"


async def test_stop_kills_the_process_group_and_users_do_not_interfere(tmp_path: Path) -> None:
    alice = Connecting(connect_to_job_cmd="sleep 300 & sleep 300; wait", connect_startup_check=0.1)
    bob = Connecting(connect_to_job_cmd="sleep 300", connect_startup_check=0.1)
    assert await alice.start() == ("127.0.0.1", 8888)
    await bob.start()
    alice_group, bob_group = alice.connect_pid, bob.connect_pid
    await alice.stop()
    assert alice.stopped and not _group_alive(alice_group)
    assert await bob.poll() is None and _group_alive(bob.connect_pid)
    await bob.stop()
    assert not _group_alive(bob_group)


async def test_command_is_adopted_after_a_hub_restart() -> None:
    first = Connecting(connect_to_job_cmd="sleep 300", connect_startup_check=0.1)
    await first.start()
    state = first.get_state()
    # A new hub process: a new spawner object, the same state; the command is still running.
    second = Connecting(connect_to_job_cmd="sleep 300")
    second.load_state(state)
    assert await second.poll() is None
    await second.stop()
    assert not _group_alive(state["connect_pid"])


async def test_a_connect_step_stopped_with_the_hub_is_started_again_while_the_job_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service manager stopping the hub SIGTERMs its whole cgroup, the connect step included; the
    restarted hub must run the command again (same hub-side port: the proxy's route stays right)."""
    first = Connecting(connect_to_job_cmd="sleep 300 # {port} {rport}", connect_startup_check=0.1)
    await first.start()
    state = first.get_state()
    os.killpg(state["connect_pid"], signal.SIGTERM)
    await asyncio.wait_for(first._connect.wait(), 10)  # type: ignore[union-attr]
    # The new hub process: a new spawner object with the stored state, whose connect PID is gone.
    second = Connecting(connect_to_job_cmd="sleep 300 # {port} {rport}", connect_startup_check=0.1)
    second.load_state(state)
    with caplog.at_level(logging.WARNING):
        assert await second.poll() is None
    assert not second.stopped and second.connect_pid not in (0, state["connect_pid"])
    assert _group_alive(second.connect_pid)
    assert second.get_state()["connect_command"] == state["connect_command"]  # the same port
    assert second.get_state()["connect_restarted"] == 1
    assert "started by an earlier hub process" in caplog.text and "starting the command again" in caplog.text
    await second.stop()
    assert second.stopped and not _group_alive(second.get_state().get("connect_pid") or state["connect_pid"])


async def test_a_connect_step_that_fails_ends_the_server_though_the_job_runs() -> None:
    """The agent gone for longer than the grace (exit 5), the tunnel deleted (3), the broker refusing
    (2): a failure, not a stop. Starting it again would only hide a lost node for ten more rounds."""
    spawner = Connecting(connect_to_job_cmd="sleep 0.3; echo agent gone; exit 5", connect_startup_check=0.1)
    await spawner.start()
    assert spawner.job_status is JobStatus.RUNNING  # Slurm still says so for a lost node
    await asyncio.wait_for(spawner._connect.wait(), 10)  # type: ignore[union-attr]
    assert await spawner.poll() == 1
    assert spawner.stopped and spawner.connect_restarted == 0
    assert spawner.stop_reason == "connect-to-job command exited with status 5: agent gone"


async def test_a_connect_step_that_keeps_ending_ends_the_server_after_connect_restarts() -> None:
    spawner = Connecting(connect_to_job_cmd="sleep 0.3; echo gone again; exit 0", connect_startup_check=0.1,
                         connect_restarts=2)
    await spawner.start()
    for restart in (1, 2):
        await asyncio.wait_for(spawner._connect.wait(), 10)  # type: ignore[union-attr]
        assert await spawner.poll() is None and spawner.connect_restarted == restart
    await asyncio.wait_for(spawner._connect.wait(), 10)  # type: ignore[union-attr]
    assert await spawner.poll() == 1
    assert spawner.stopped
    assert spawner.stop_reason == "connect-to-job command exited with status 0: gone again"


async def test_a_connect_step_that_cannot_start_again_ends_the_server(tmp_path: Path) -> None:
    taken = tmp_path / "port-taken"
    spawner = Connecting(connect_to_job_cmd=f"test -e {taken} && echo port taken && exit 2; sleep 0.3",
                         connect_startup_check=0.1)
    await spawner.start()
    taken.touch()  # meanwhile, something else took the hub-side port
    await asyncio.wait_for(spawner._connect.wait(), 10)  # type: ignore[union-attr]
    assert await spawner.poll() == 1
    assert spawner.stopped
    assert spawner.stop_reason == ("connect-to-job command exited with status 0; started again, "
                                   "connect-to-job command exited with status 2: port taken")


@pytest.fixture
def sshd(procs: ProcessGroup, tmp_path: Path) -> tuple[Path, int]:
    """An sshd on loopback with throwaway keys: (key directory, port)."""
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("needs openssh-server (scripts/test.sh installs it)")
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    shutil.copy(keys / "client.pub", keys / "authorized_keys")
    ssh_port = free_port()
    (keys / "sshd_config").write_text(
        f"Port {ssh_port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nUsePAM no\nStrictModes no\nAllowTcpForwarding yes\n"
        f"PidFile {keys / 'sshd.pid'}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    procs.start("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(keys / "sshd_config")])
    wait_until(lambda: port_open(ssh_port), 10, "sshd")
    return keys, ssh_port


@pytest.fixture
def marker_server(procs: ProcessGroup, tmp_path: Path) -> int:
    """A stand-in notebook serving marker.txt; returns its port."""
    (tmp_path / "marker.txt").write_text("through ssh -L")
    port = free_port()
    procs.start("notebook", [str(BIN / "python"), "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                cwd=tmp_path)
    wait_until(lambda: port_open(port), 10, "the stand-in notebook")
    return port


async def test_a_sites_own_ssh_forward_works_as_the_connect_command(
    sshd: tuple[Path, int], marker_server: int
) -> None:
    keys, ssh_port = sshd
    notebook_port = marker_server
    spawner = Connecting(
        notebook_port=notebook_port, connect_startup_check=1.0,
        connect_to_job_cmd=(
            f"exec ssh -N -F /dev/null -i {keys / 'client'} -p {ssh_port} -o BatchMode=yes "
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ExitOnForwardFailure=yes "
            "-L {port}:localhost:{rport} root@{host}"
        ),
    )
    ip, port = await spawner.start()
    assert (ip, port) != ("127.0.0.1", notebook_port)  # the proxy goes to the hub-side end
    await asyncio.get_running_loop().run_in_executor(None, wait_until, lambda: port_open(port), 10, "ssh -L")
    body = await asyncio.get_running_loop().run_in_executor(
        None, lambda: urllib.request.urlopen(f"http://{ip}:{port}/marker.txt", timeout=5).read())
    assert body == b"through ssh -L"
    await spawner.stop()
    assert not port_open(port)  # no orphaned forwarder keeps the port


async def test_the_stop_reason_is_kept_for_the_users_next_spawn() -> None:
    spawner = Connecting(connect_to_job_cmd="sleep 0.3; echo lost the broker; exit 4", connect_startup_check=0.1,
                         connect_restarts=0)
    await spawner.start()
    await asyncio.sleep(1)
    assert await spawner.poll() == 1
    await spawner.stop()
    spawner.clear_state()  # what JupyterHub does after stop
    state = spawner.get_state()
    # A later hub process, or the same one: the next spawn knows why the last server stopped.
    again = Connecting(connect_to_job_cmd="sleep 300", connect_startup_check=0.1)
    again.load_state(state)
    await again.start()
    assert again.previous_stop == "connect-to-job command exited with status 4: lost the broker"
    assert "stop_reason" not in again.get_state()
    await again.stop()


LISTEN = ("python3 -c 'import socket, time; s = socket.create_server((\"127.0.0.1\", {port})); time.sleep(300)'"
          " # forwards to {rport}")


async def test_the_spawn_goes_on_once_the_command_listens_not_after_a_fixed_wait(
        caplog: pytest.LogCaptureFixture) -> None:
    """The readiness signal is the hub-side port listening: with a 60 s limit, a command that listens
    at once is taken as ready then (waiting the limit out would time this test out)."""
    spawner = Connecting(connect_to_job_cmd=LISTEN, connect_startup_check=60)
    spawner.log = logging.getLogger("test-connect")
    with caplog.at_level(logging.DEBUG, logger="test-connect"):
        _, port = await spawner.start()
    assert f"listening on port {port} after" in caplog.text
    still = Connecting(connect_to_job_cmd="sleep 300 # {port} {rport}", connect_startup_check=0.2)
    still.log = logging.getLogger("test-connect")
    with caplog.at_level(logging.DEBUG, logger="test-connect"):
        await still.start()  # never listens, keeps running: ready once the limit has passed
    assert "still running, its port not listening yet after" in caplog.text
    for s in (spawner, still):
        await s._stop_connect()


async def test_a_port_already_listening_is_no_readiness_signal() -> None:
    """``{port}`` without ``{rport}`` is the notebook's own port: if something listens there already,
    the command's exit within the check is what counts, as before."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        spawner = Connecting(connect_to_job_cmd="sleep 0.2; echo 'bind: Address already in use' >&2; exit 255",
                             connect_startup_check=5)
        spawner.notebook_port = busy.getsockname()[1]
        with pytest.raises(ConnectToJobError, match="status 255: bind: Address already in use"):
            await spawner.start()
