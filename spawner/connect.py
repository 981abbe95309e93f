"""The connect-to-job step, for any batchspawner class (the paper's feature, batchspawner PR #200).

``connect_to_job_cmd`` is a template rendered once the job runs and the
notebook reported its port, then run in the background on the hub and watched.
Examples (str.format or Jinja, as batchspawner's own templates)::

    batchtunnel connect --tunnel {tunnel_id} --port {port} --rport {rport} --keep-exposure  # (default)
    ssh -N -L {port}:localhost:{rport} {host}                                # a site's own forward
    condor_ssh_to_job -auto-retry {job_id} -N -L {port}:localhost:{rport}    # the paper's HTCondor way

Variables: ``{job_id}`` the batch job id, ``{host}`` the execute host the batch
system reports, ``{port}``, ``{rport}``, plus every ``req_*`` value (``{username}``,
...). If the template mentions ``rport``, ``{port}`` is a free port on the hub
and ``{rport}`` the notebook's port on the node; otherwise ``{port}`` is the
notebook's port. Values are shell-quoted before substitution.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import time
from typing import TYPE_CHECKING, Any

from batchspawner.batchspawner import JobStatus, format_template
from jupyterhub.utils import random_port
from traitlets import Float, Integer, Unicode, observe
from traitlets.config import Configurable

from ..wire import ConnectToJobError
from . import port_report
from .background import BackgroundCommand
from .readiness import wait_answering
from .timing import StartTiming

if TYPE_CHECKING:
    # The mixin is only ever combined with a batchspawner class (``class X(ConnectToJobMixin, SlurmSpawner)``)
    # and uses its attributes and super() methods: for the type checker it derives from their common base.
    # At run time it stays a plain Configurable, so the spawner's MRO is exactly the one it always was.
    from batchspawner import BatchSpawnerBase as _SpawnerBase
else:
    _SpawnerBase = Configurable

_RPORT = re.compile(r"\brport\b")


READY_POLL = 0.02
"""Seconds between looks at the connect step's port while waiting for it to listen."""


async def wait_ready(connect: BackgroundCommand, port: int, limit: float, taken: bool) -> tuple[float, str]:
    """Wait until the connect command listens on ``port``, exits, or ``limit`` seconds pass; returns the
    seconds waited and which. Listening is read from the kernel's socket tables (/proc/net/tcp*), not
    by connecting: a probe connection would open a stream through the tunnel to a notebook that may
    not be up yet. A port ``taken`` before the command started says nothing: then only the limit."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        waited = loop.time() - started
        if connect.exited():
            return waited, "exited"
        if not taken and listening(port):
            return waited, f"listening on port {port}"
        if waited >= limit:
            return waited, "still running, its port not listening yet"
        await asyncio.sleep(min(READY_POLL, max(0.0, limit - waited)))


def listening(port: int) -> bool:
    """Does a TCP socket of this network namespace listen on ``port`` (any address)?"""
    suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split(None, 4)
                    if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(suffix):  # 0A: LISTEN
                        return True
        except OSError:
            continue
    return False


class ConnectToJobMixin(_SpawnerBase):
    """Adds the connect-to-job step to a batchspawner class: put it before the class in the bases."""

    connect_to_job_cmd = Unicode(
        "",
        help="""
        Command run on the hub, in the background, once the job runs and the notebook reported its port;
        it must make the notebook reachable from the hub and stay in the foreground while it does.

        Template variables: {job_id}, {host}, {port}, {rport} and the req_* values ({username}, ...),
        in str.format or Jinja syntax. If it mentions {rport}, {port} is a free port on the hub and
        {rport} the notebook's port on the node; otherwise {port} is the notebook's port. The proxy is
        then pointed at connect_ip:{port}.

        Empty: no connect step; the spawner behaves exactly like plain batchspawner. The tunnel
        spawners default to this installation's `batchtunnel connect --tunnel {tunnel_id} --port {port}
        --rport {rport} --keep-exposure`, by absolute path.

        If the command is stopped while the job still runs (by a signal, as a service manager that
        stops the hub stops it too, or it exits with status 0), the next poll starts it again, as
        rendered the first time (the same hub-side port, so the proxy's route stays right), up to
        connect_restarts times. A command that fails (any other exit status: the broker refused it,
        the tunnel is gone, the agent has been away too long) ends the server, with its reason.
        """,
    ).tag(config=True)

    connect_restarts = Integer(
        10,
        help="""
        How many times, per server, the connect step is started again when it ended while the job
        still runs, before the server is ended instead. Each restart is logged with the reason the
        command ended. 0: a connect step that ends always ends the server.
        """,
    ).tag(config=True)

    connect_startup_check = Float(
        1.0,
        help="""
        Longest wait, in seconds, for connect_to_job_cmd to be ready. The spawn goes on as soon as
        something listens on the hub-side port it was given (``{port}``), or once this time has passed
        with the command still running; if the command exits first, the spawn fails with its exit
        status and last output. 0 checks at once.
        """,
    ).tag(config=True)

    notebook_ready_timeout = Float(
        30.0,
        help="""
        Longest wait, in seconds, for the notebook to answer HTTP at the address start() hands to
        JupyterHub, asked every 50 ms, before start() returns. JupyterHub checks that address itself
        afterwards, with pauses that double (0.2, 0.4, 0.8, 1.6 s...): a notebook that begins
        answering just after one of its checks waits for the next, 0.03-1.4 s per start measured on
        real Slurm (docs/benchmarks.md). Waiting here, JupyterHub's first check succeeds. The wait
        never takes start() past ``start_timeout``; when it ends without an answer, start() returns
        anyway and JupyterHub's own check (``http_timeout``) decides. 0: return as soon as the port is
        known, as batchspawner does.
        """,
    ).tag(config=True)

    connect_ip = Unicode(
        "127.0.0.1",
        help="""
        Hub-side address the proxy uses to reach the notebook when connect_to_job_cmd is set (where the
        command listens). Not the execute host: that is what the connect step replaces.
        """,
    ).tag(config=True)

    connect_stop_timeout = Float(
        5.0,
        help="Seconds the connect command's process group gets to exit after SIGTERM before SIGKILL.",
    ).tag(config=True)

    # State (get_state/load_state): survives a hub restart, so the running command can be adopted.
    connect_pid = Integer(0)
    connect_port = Integer(0)
    connect_command = Unicode("")
    connect_restarted = Integer(0)

    stop_reason = Unicode("", help="Why the server stopped, when we know (shown on the next spawn page).")
    previous_stop = ""  # the stop_reason of the last server, for this spawn's progress messages

    _connect: BackgroundCommand | None = None  # assigned per instance, never mutated in place
    start_timing: StartTiming | None = None  # the phases of the start in progress (spawner/timing.py)
    _seen_running = False

    # -- hooks for subclasses

    def connect_subvars(self) -> dict[str, Any]:
        """Extra template variables (the tunnel spawners add {tunnel_id})."""
        return {}

    def connect_env(self) -> dict[str, str]:
        """The environment of the connect command: the hub's, by default."""
        return dict(os.environ)

    # -- rendering

    def render_connect_cmd(self, host: str, notebook_port: int) -> tuple[str, int]:
        """Return the command line and the hub-side port the proxy should use.

        Raises:
            ConnectToJobError: the template names an unknown variable or does not parse.
        """
        template = self.connect_to_job_cmd
        if _RPORT.search(template):
            port, rport = random_port(), notebook_port
        else:
            port = rport = notebook_port
        values: dict[str, Any] = dict(self.get_req_subvars())
        values.update(self.connect_subvars())
        values.update(job_id=self.job_id, host=host, port=port, rport=rport)
        quoted = {k: shlex.quote(v) if isinstance(v, str) else v for k, v in values.items()}
        try:
            return format_template(template, **quoted), port
        except (KeyError, IndexError, ValueError) as exc:
            raise ConnectToJobError(f"connect_to_job_cmd cannot be rendered: {exc!r}") from None

    # -- lifecycle

    async def start(self) -> Any:
        self.previous_stop, self.stop_reason = self.stop_reason, ""
        self.connect_restarted = 0
        port_report.ensure_running()  # a class a wrapper imported late still gets the hardened handler
        self.start_timing = timing = StartTiming(self.log, f"{self.user.name}'s server")
        try:
            ip, port = await self._start_and_connect(timing)
            await self._wait_answering(timing, ip, port)
            if self.log.isEnabledFor(logging.DEBUG):
                await self.phases_seen_elsewhere(timing)
        finally:
            self.start_timing = None
        timing.mark("started")
        return ip, port

    async def _wait_answering(self, timing: StartTiming, ip: str, port: int) -> None:
        """Until the notebook answers at the address JupyterHub gets (spawner/readiness.py), within
        notebook_ready_timeout and what is left of start_timeout."""
        if self.notebook_ready_timeout <= 0:
            return
        left = float(self.start_timeout) - (time.time() - timing.began) - 1.0
        limit = min(self.notebook_ready_timeout, left)
        if limit <= 0:
            return
        server = getattr(self, "server", None)
        path = server.base_url if server is not None else "/"
        waited, attempts, answered = await wait_answering(ip or "127.0.0.1", port, path, limit)
        if answered:
            timing.mark(f"notebook answers HTTP after {waited * 1000:.0f} ms ({attempts} checks)")
        else:
            self.log.info("The notebook of %s did not answer HTTP within %.0f s; JupyterHub checks on",
                          self.user.name, waited)

    async def phases_seen_elsewhere(self, timing: StartTiming) -> None:
        """Log the phases of this start that other processes saw (``timing.mark_at``); only at DEBUG."""

    # The phases batchspawner passes through, seen as it records them (its start() is one loop).

    @observe("job_id")
    def _job_submitted(self, change: dict[str, Any]) -> None:
        if self.start_timing is not None and change["new"]:
            self.start_timing.mark(f"job {change['new']} submitted")

    @observe("job_status")
    def _job_status(self, change: dict[str, Any]) -> None:
        timing = self.start_timing
        if timing is not None and change["new"] and not self._seen_running and self.state_isrunning():
            self._seen_running = True
            timing.mark(f"job {self.job_id} running on {self.state_gethost() or '?'}")

    @observe("port")
    def _port_reported(self, change: dict[str, Any]) -> None:
        if self.start_timing is not None and change["new"] and not self._connect:
            self.start_timing.mark(f"notebook port {change['new']} reported")

    async def _start_and_connect(self, timing: StartTiming) -> tuple[str, int]:
        self._seen_running = False
        ip, port = await super().start()
        if not self.connect_to_job_cmd:
            return ip, port
        command, local_port = self.render_connect_cmd(ip, port)
        connect = BackgroundCommand(command, self.connect_env(), name="connect-to-job command")
        self.log.info("Starting connect-to-job command for job %s: %s", self.job_id, command)
        taken = listening(local_port)  # e.g. {port} is the notebook's own port, already forwarded
        await connect.start()
        self._connect = connect
        waited, why = await wait_ready(connect, local_port, self.connect_startup_check, taken)
        timing.mark(f"connect step {why} after {waited * 1000:.0f} ms")
        if connect.exited():
            reason = await connect.exit_reason()
            await connect.terminate(self.connect_stop_timeout)
            self._connect = None
            raise ConnectToJobError(f"Could not connect to the notebook: {reason}")
        assert connect.pid is not None
        self.connect_pid, self.connect_port, self.connect_command = connect.pid, local_port, command
        self.ip, self.port = self.connect_ip, local_port
        return self.ip, self.port

    async def poll(self) -> int | None:
        connect = self._watched_connect()
        if connect is not None and connect.exited():
            reason = await connect.exit_reason()
            stopped = (connect.returncode or 0) <= 0  # by a signal, or cleanly, or unknowable: not a failure
            self._connect = None
            self.connect_pid = 0  # seen: later polls must not adopt the dead PID and reword the reason
            if stopped:
                reason = await self._restart_connect(reason)
            if not reason:
                return None
            self.stop_reason = reason
            self.log.warning("Server of %s stopped: %s", self.user.name, self.stop_reason)
            # JupyterHub calls stop() only for a server poll() says is running. The job may well be:
            # its node is lost, or the connection to it is. End it here (and whatever subclasses hold,
            # like the tunnel), or it would run on for nobody.
            await self.stop(now=True)
            return 1
        status: int | None = await super().poll()
        if status is not None and connect is not None:
            # The job is gone (cancelled, out of time, its node failed). JupyterHub does not call
            # stop() for a server poll() finds ended: the connect step would run on for nothing.
            self.log.info("Job of %s ended; stopping its connect-to-job command", self.user.name)
            await self._stop_connect()
        return status

    async def _restart_connect(self, reason: str) -> str:
        """Start the ended connect step (which ended for ``reason``) again if the job still runs.
        Returns "" if it runs again, else why the server ends."""
        if not self.connect_command or self.connect_restarted >= self.connect_restarts:
            return reason
        if await self.query_job_status() not in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.UNKNOWN):
            return reason  # the job ended too: the usual ending
        self.connect_restarted += 1
        self.log.warning("Job %s of %s still runs but its %s; starting the command again on hub-side port %d "
                         "(restart %d of at most %d)", self.job_id, self.user.name, reason, self.connect_port,
                         self.connect_restarted, self.connect_restarts)
        connect = BackgroundCommand(self.connect_command, self.connect_env(), name="connect-to-job command")
        await connect.start()
        await asyncio.sleep(self.connect_startup_check)
        if connect.exited():
            again = await connect.exit_reason()
            await connect.terminate(self.connect_stop_timeout)
            return f"{reason}; started again, {again}"
        assert connect.pid is not None
        self._connect, self.connect_pid = connect, connect.pid
        self._save_state()  # a later hub process must adopt this PID, not restart what runs
        return ""

    def _save_state(self) -> None:
        """Store get_state() in the hub's database now, as JupyterHub does after start() (it does not
        after poll())."""
        orm_spawner, db = getattr(self, "orm_spawner", None), getattr(self, "db", None)
        if orm_spawner is None or db is None:
            return
        try:
            orm_spawner.state = self.get_state()
            db.commit()
        except Exception as exc:  # the database is the hub's: never fail the poll for it
            self.log.warning("Could not store the state of %s's server: %s", self.user.name, exc)

    async def stop(self, now: bool = False) -> None:
        await self._stop_connect()
        await super().stop(now=now)

    async def _stop_connect(self) -> None:
        """Terminate the running connect step (ours or an adopted one), if any; forget its PID."""
        connect = self._watched_connect()
        if connect is not None:
            await connect.terminate(self.connect_stop_timeout)
            self._connect = None
        self.connect_pid = 0

    def _watched_connect(self) -> BackgroundCommand | None:
        """The running command: ours, or the one an earlier hub process started (adopted by PID)."""
        if self._connect is None and self.connect_pid:
            self._connect = BackgroundCommand.adopt(self.connect_pid, self.connect_command,
                                                    name="connect-to-job command")
        return self._connect

    # -- state

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.stop_reason:  # kept through clear_state: the user sees it when spawning again
            state["stop_reason"] = self.stop_reason
        if self.connect_pid:
            state.update(connect_pid=self.connect_pid, connect_port=self.connect_port,
                         connect_command=self.connect_command, connect_restarted=self.connect_restarted)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.connect_pid = int(state.get("connect_pid", 0))
        self.connect_port = int(state.get("connect_port", 0))
        self.connect_command = str(state.get("connect_command", ""))
        self.connect_restarted = int(state.get("connect_restarted", 0))
        self.stop_reason = str(state.get("stop_reason", ""))

    def clear_state(self) -> None:
        super().clear_state()
        self.connect_pid = self.connect_port = self.connect_restarted = 0
        self.connect_command = ""
