"""A real JupyterHub (6.x) with the real configurable-http-proxy, configured for our spawners."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .processes import BIN, Proc, ProcessGroup, free_port, port_open, wait_until
from .tunnel import ADMIN_TOKEN, BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
CHP = ROOT / ".node" / "node_modules" / ".bin" / "configurable-http-proxy"
FAKEBATCH = Path(__file__).resolve().parent / "fakebatch"
JOBENV = ROOT / ".jobenv" / "bin"  # the jobs' Python environment on the real cluster (scripts/setup.sh)


def ensure_user(name: str) -> None:
    """A real Linux account (batchspawner looks users up with getpwnam)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)


class HubClient:
    """A running JupyterHub, seen from outside: its API through its proxy (as the service ``token``
    authenticates), its spawn progress and the proxy's routes."""

    def __init__(self, port: int, token: str, proxy_api_port: int, proxy_token: str) -> None:
        self.port, self.token = port, token
        self.proxy_api_port, self.proxy_token = proxy_api_port, proxy_token

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Authorization", f"token {token or self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw

    def progress(self, user: str, timeout: float = 120) -> list[dict[str, Any]]:
        """Read the spawn progress event stream until it reports ready (or failed)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/hub/api/users/{user}/server/progress")
        req.add_header("Authorization", f"token {self.token}")
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    events.append(event)
                    if event.get("ready") or event.get("failed"):
                        break
                if time.monotonic() > deadline:
                    break
        return events

    def route_target(self, user: str) -> str | None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.proxy_api_port}/api/routes")
        req.add_header("Authorization", f"token {self.proxy_token}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            routes = json.load(resp)
        route = routes.get(f"/user/{user}") or routes.get(f"/user/{user}/")
        return None if route is None else str(route["target"])



class Hub(HubClient):
    """``jupyterhub -f <generated config>`` with the real configurable-http-proxy.

    By default the hub starts the proxy; a restarted hub then replaces it (JupyterHub terminates the
    proxy its pid file names), which drops every connection through it. With ``external_proxy`` the
    proxy is a process of its own that the hub only configures (``should_start = False``), as sites
    run it: it lives through a hub restart, and so do the connections through it.
    """

    def __init__(self, procs: ProcessGroup, workdir: Path, broker: BrokerProcess, pending: float = 0,
                 api_port: int = 0, backend: str = "slurm", hub_ip: str = "127.0.0.1", log_level: str = "INFO",
                 external_proxy: bool = False, hub_config: tuple[str, ...] = (), **spawner: Any) -> None:
        self.procs = procs
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(free_port(), secrets.token_hex(16), free_port(), secrets.token_hex(16))
        self.api_port = api_port or free_port()
        self.batch_dir = workdir / "batch"
        (workdir / "admin.token").write_text(ADMIN_TOKEN)
        (workdir / "admin.token").chmod(0o600)
        commands = {
            "slurm": {"batch_submit_cmd": f"{FAKEBATCH}/sbatch --parsable",
                      "batch_query_cmd": f"{FAKEBATCH}/squeue -h -j {{job_id}} -o '%T %B %r'",
                      "batch_cancel_cmd": f"{FAKEBATCH}/scancel {{job_id}}", "req_srun": ""},
            "torque": {"batch_submit_cmd": f"{FAKEBATCH}/qsub", "batch_query_cmd": f"{FAKEBATCH}/qstat -x {{job_id}}",
                       "batch_cancel_cmd": f"{FAKEBATCH}/qdel {{job_id}}"},
            # The real cluster of scripts/slurm-cluster.sh: the spawner's own commands, jobs run as the user.
            "real-slurm": {"exec_prefix": "sudo -E -u {username}", "req_srun": "",
                           "agent_cmd": [str(JOBENV / "batchtunnel"), "agent"],
                           "batchspawner_singleuser_cmd": str(JOBENV / "batchspawner-singleuser"),
                           "cmd": [str(JOBENV / "jupyterhub-singleuser")]},
            # The real Grid Engine cell of scripts/gridengine-cluster.sh, the same way.
            "real-gridengine": {"exec_prefix": "sudo -E -u {username}",
                                "agent_cmd": [str(JOBENV / "batchtunnel"), "agent"],
                                "batchspawner_singleuser_cmd": str(JOBENV / "batchspawner-singleuser"),
                                "cmd": [str(JOBENV / "jupyterhub-singleuser")]},
        }[backend]
        spawner_class = {"slurm": "SlurmTunnelSpawner", "torque": "TorqueTunnelSpawner",
                         "real-slurm": "SlurmTunnelSpawner", "real-gridengine": "GridEngineTunnelSpawner"}[backend]
        entry_point = {"torque": "torque-tunnel", "real-gridengine": "gridengine-tunnel"}.get(backend, "slurm-tunnel")
        settings: dict[str, Any] = {
            "exec_prefix": "",
            "startup_poll_interval": 0.2,
            "broker_url": broker.agent_url,
            "broker_api_url": broker.api_url,
            "broker_admin_token_file": str(workdir / "admin.token"),
            "broker_ca_file": broker.pki.ca,
            "agent_cmd": [str(BIN / "batchtunnel"), "agent"],
            "connect_to_job_cmd": f"{BIN / 'batchtunnel'} connect --tunnel {{tunnel_id}} --port {{port}} "
                                  "--rport {rport} --poll-interval 0.5 --keep-exposure",
            "batchspawner_singleuser_cmd": str(BIN / "batchspawner-singleuser"),
            **commands,
            **spawner,
        }
        lines = [
            "c = get_config()  # noqa",
            "c.JupyterHub.ip = '127.0.0.1'",
            f"c.JupyterHub.log_level = {log_level!r}",
            f"c.JupyterHub.port = {self.port}",
            f"c.JupyterHub.hub_ip = {hub_ip!r}",
            f"c.JupyterHub.hub_port = {self.api_port}",
            f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{self.proxy_api_port}'",
            f"c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]",
            f"c.ConfigurableHTTPProxy.auth_token = {self.proxy_token!r}",
            f"c.ConfigurableHTTPProxy.should_start = {not external_proxy!r}",
            "c.JupyterHub.cleanup_servers = False",
            "c.JupyterHub.tornado_settings = {'slow_spawn_timeout': 0}",
            f"c.JupyterHub.db_url = 'sqlite:///{workdir}/jupyterhub.sqlite'",
            f"c.JupyterHub.cookie_secret_file = '{workdir}/cookie_secret'",
            "c.JupyterHub.authenticator_class = 'dummy'",
            "c.Authenticator.allow_all = True",
            f"c.JupyterHub.services = [{{'name': 'tester', 'api_token': {self.token!r}}}]",
            "c.JupyterHub.load_roles = [{'name': 'tester', 'services': ['tester'], 'scopes': "
            "['admin:users', 'admin:servers', 'access:servers', 'read:users', 'list:users', 'tokens']}]",
            f"c.JupyterHub.spawner_class = {entry_point!r}",
            f"c.Spawner.cmd = [{str(BIN / 'jupyterhub-singleuser')!r}]",
            "c.Spawner.args = ['--allow-root']",
            "c.Spawner.start_timeout = 120",
            "c.Spawner.http_timeout = 60",
            "c.Spawner.env_keep = ['PATH', 'LANG', 'LC_ALL', 'FAKEBATCH_DIR', 'FAKEBATCH_PENDING', 'SLURM_CONF']",
        ]
        lines += [f"c.{spawner_class}.{key} = {value!r}" for key, value in settings.items()]
        lines += hub_config  # a test's own lines, last
        self.config = workdir / "jupyterhub_config.py"
        self.config.write_text("\n".join(lines) + "\n")
        self.env = {"FAKEBATCH_DIR": str(self.batch_dir), "FAKEBATCH_PENDING": str(pending)}
        self.proc: Proc | None = None
        self.starts = 0
        procs.cleanups.append(self.kill_jobs)  # jobs run in their own sessions: not in procs' groups
        if external_proxy:
            hub_url = f"http://{hub_ip}:{self.api_port}"
            proxy = procs.start("proxy", [str(CHP), "--ip", "127.0.0.1", "--port", str(self.port),
                                          "--api-ip", "127.0.0.1", "--api-port", str(self.proxy_api_port),
                                          "--default-target", hub_url, "--error-target", f"{hub_url}/hub/error"],
                                env={"CONFIGPROXY_AUTH_TOKEN": self.proxy_token})
            proxy.wait_ready(lambda: port_open(self.proxy_api_port), 30, "the proxy's API")
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.proc = self.procs.start(f"jupyterhub-{self.starts}", [str(BIN / "jupyterhub"), "-f", str(self.config)],
                                     env=self.env, cwd=self.workdir)
        self.proc.wait_ready(lambda: self.api("GET", "/hub/api/")[0] == 200, 60, "JupyterHub's API")

    def stop_like_systemd(self, timeout: float = 10.0) -> list[str]:
        """What ``systemctl stop`` does with the default ``KillMode=control-group``: SIGTERM to the hub
        and every process it started (its cgroup: the connect steps too, though they run in sessions of
        their own), then SIGKILL to whatever is left after ``timeout``. The proxy is not the hub's child
        here (``external_proxy``), as it is not in the hub's unit at a site. Returns the command lines
        signalled."""
        assert self.proc is not None
        tree = [self.proc.pid, *descendants(self.proc.pid)]
        signalled = []
        for pid in tree:
            try:
                signalled.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ProcessLookupError):
                pass
        try:
            wait_until(lambda: not any(_exists(pid) for pid in tree), timeout, "the hub's processes to exit")
        except AssertionError:
            for pid in tree:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        return signalled

    def kill9(self) -> None:
        """SIGKILL the hub process alone; the proxy and the connect commands live on, as at a site."""
        assert self.proc is not None
        self.proc.signal(9)
        self.proc.wait(10)

    def kill_jobs(self) -> None:
        """Kill every job the stand-in batch system started (teardown, even after a failure)."""
        for pidfile in self.batch_dir.glob("*.pid"):
            try:
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def jobs_running(self) -> list[str]:
        """Ids of the stand-in batch system's jobs whose process is still alive."""
        running = []
        for pidfile in sorted(self.batch_dir.glob("*.pid")):
            try:
                with open(f"/proc/{int(pidfile.read_text())}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                        running.append(pidfile.stem)
            except OSError:
                pass
        return running


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _exists(pid: int) -> bool:
    """Alive and not a zombie (a reaped or unreaped dead process does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
