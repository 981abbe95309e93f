"""The broker-backed connect step: a tunnel per job, an agent wrapping the notebook inside the job.

At submission the spawner creates a tunnel at the broker and passes the agent
its token, the broker URL and CA in the job's *environment* (never in the
script text or argv). The batch script runs ``batchtunnel agent -- <notebook>``;
the notebook listens on 127.0.0.1 on the node. The connect step (by default
``batchtunnel connect``) exposes the tunnel on a hub-side port for the proxy.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from batchspawner.batchspawner import JobStatus, format_template
from traitlets import Float, List, Unicode, default

from ..client import BrokerClient
from ..wire import ApiError, ConfigurationError, JobEndedError
from .agent_command import AgentCommandMixin, loggable_script
from .connect import ConnectToJobMixin
from .form import ResourceOptionsMixin
from .timing import StartTiming


def default_connect_cmd() -> str:
    """``batchtunnel connect`` of this installation, by absolute path (a hub run by a service manager
    has no PATH that names it), leaving the exposure to the spawner when stopped (hub restarts)."""
    script = os.path.join(os.path.dirname(sys.executable), "batchtunnel")
    program = shlex.quote(script) if os.access(script, os.X_OK) else f"{shlex.quote(sys.executable)} -m batchtunnel.cli"
    return f"{program} connect --tunnel {{tunnel_id}} --port {{port}} --rport {{rport}} --keep-exposure"


class BrokerTunnelMixin(ResourceOptionsMixin, AgentCommandMixin, ConnectToJobMixin):
    """Connects a batchspawner class's jobs through our broker. Put it first in the bases."""

    broker_url = Unicode(
        "",
        help="""
        URL the agent inside the job dials: wss://HOST:PORT/agent, HOST being the broker's name as the
        compute nodes resolve it (it must match the broker certificate). Required.
        """,
    ).tag(config=True)

    broker_api_url = Unicode(
        "http://127.0.0.1:8766",
        help="""
        The broker's admin API, as reachable from the hub: http://127.0.0.1:PORT, or unix:PATH when the
        broker listens on a unix socket (--api-listen unix:PATH; then its file mode decides who may
        connect: run the hub as the broker's user or in its group with --api-socket-mode 660).
        """,
    ).tag(config=True)

    broker_admin_token_file = Unicode(
        "",
        help="""
        File holding the broker's admin token. Empty: the hub's BATCHTUNNEL_ADMIN_TOKEN environment
        variable. Passed on to the connect command as a file or variable, never on its command line.
        """,
    ).tag(config=True)

    broker_ca_file = Unicode(
        "",
        help="""
        PEM file of the CA the agent uses to verify the broker (`batchtunnel certs init` writes ca.pem).
        Its content goes to the job as BATCHTUNNEL_CA_PEM, so nodes need no copy of the file.
        Empty: the nodes' system CAs.
        """,
    ).tag(config=True)

    broker_fingerprints = List(
        Unicode(),
        [],
        help="""
        Pin the broker's certificate instead of (or besides) a CA: its SHA-256 fingerprints as
        `batchtunnel certs show` prints them for broker.pem ("sha256:AB:CD:..."). Several are allowed,
        to cover a renewal. Without broker_ca_file, the pin alone is checked. Passed to the job as
        BATCHTUNNEL_FINGERPRINT.
        """,
    ).tag(config=True)

    tunnel_lifetime = Float(
        0.0,
        help="""
        Seconds a job's tunnel credential stays valid from its creation; after that the broker
        refuses it and disconnects the agent. Cover the longest queue wait plus the longest runtime.
        0: the credential lives until the tunnel is deleted (when the server stops).
        """,
    ).tag(config=True)

    notebook_ip = Unicode(
        "127.0.0.1",
        help="""
        Address the notebook listens on, on the node. Keep loopback: the agent connects there, and
        nothing else on the node or its network can reach it. (batchspawner alone binds 0.0.0.0.)
        """,
    ).tag(config=True)

    tunnel_id = Unicode("")  # state
    _agent_token = ""  # memory only: given to the job once, never stored
    _submitted_job = ""  # batchspawner clears job_id when a job dies; we still want to ask why

    @default("connect_to_job_cmd")
    def _default_connect_cmd(self) -> str:
        return default_connect_cmd()

    # -- broker

    def broker_client(self) -> BrokerClient:
        if self.broker_admin_token_file:
            with open(self.broker_admin_token_file, encoding="utf-8") as f:
                token = f.read().strip()
        else:
            token = os.environ.get("BATCHTUNNEL_ADMIN_TOKEN", "")
        if not token:
            raise ConfigurationError("batchtunnel: no broker admin token (broker_admin_token_file or "
                                     "BATCHTUNNEL_ADMIN_TOKEN)")
        return BrokerClient(self.broker_api_url, token)

    async def _broker(self, method: str, *args: Any) -> Any:
        client = self.broker_client()
        return await asyncio.get_running_loop().run_in_executor(None, getattr(client, method), *args)

    async def create_tunnel(self) -> None:
        if not self.broker_url:
            raise ConfigurationError("batchtunnel: set broker_url (wss://HOST:PORT/agent) in the spawner config")
        await self.delete_tunnel()  # one left by a server that ended without stop(): never leak it
        created = await self._broker("create_tunnel", self.user.name,
                                     self.tunnel_lifetime or None)
        self.tunnel_id, self._agent_token = created["id"], created["token"]
        self.log.info("Tunnel %s created for %s", self.tunnel_id, self.user.name)

    async def delete_tunnel(self) -> None:
        if not self.tunnel_id:
            return
        try:
            await self._broker("delete_tunnel", self.tunnel_id)
        except ApiError as exc:
            if exc.status != 404:
                self.log.warning("Could not delete tunnel %s: %s", self.tunnel_id, exc)
                return
        self.log.info("Tunnel %s deleted", self.tunnel_id)
        self.tunnel_id = ""

    # -- the job

    async def submit_batch_script(self) -> str:
        """Create the tunnel, then submit. The environment is never logged (it holds the agent token)."""
        self.validated_options()  # refuse bad options before anything is created
        await self.create_tunnel()
        try:
            subvars = self.get_req_subvars()
            cmd = " ".join((format_template(self.exec_prefix, **subvars),
                            format_template(self.batch_submit_cmd, **subvars)))
            script = await self._get_batch_script(**self.batch_variables())
            self.log.info("Submitting job for %s: %s", self.user.name, cmd)
            self.log.debug("Batch script:\n%s", loggable_script(script))
            out = await self.run_command(cmd, input=script, env=self.get_env())
            self.job_id = self._submitted_job = self.parse_job_id(out)
        except BaseException:
            await self.delete_tunnel()
            raise
        finally:
            self._agent_token = ""
        self.log.info("Job %s submitted for %s", self.job_id, self.user.name)
        return str(self.job_id)

    async def start(self) -> Any:
        """As batchspawner's, but a job that ends before its notebook starts fails the spawn with the
        batch system's reason, and its tunnel is deleted."""
        self._submitted_job = ""
        # batchspawner stops watching the job once it is RUNNING and then only waits for the port:
        # a job that dies in between would hang the spawn until start_timeout. Watch it from then on
        # (before, batchspawner's own loop queries the batch system: one query per look, not two).
        starting = asyncio.ensure_future(super().start())  # owned here: awaited or cancelled below
        try:
            while True:
                done, _ = await asyncio.wait({starting}, timeout=max(1.0, self.startup_poll_interval))
                if done:
                    return starting.result()
                if self._submitted_job and self.state_isrunning() and await self._job_gone():
                    break
        except RuntimeError as exc:  # batchspawner's own "job has disappeared"
            if not self._submitted_job or "disappeared" not in str(exc):
                raise
        finally:
            if not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
        raise await self._ended_early(self._submitted_job)

    async def _ended_early(self, job: str) -> JobEndedError:
        """The spawn's error for a job that ended before its notebook started; deletes the tunnel."""
        reason = await self.job_end_reason(job)
        await self.delete_tunnel()
        return JobEndedError(f"Batch job {job} ended before its notebook started: "
                             f"{reason or 'the batch system gave no reason'}")

    async def _job_gone(self) -> bool:
        """True once the submitted job is neither pending nor running (nor unknown to a busy scheduler)."""
        if not getattr(self, "job_id", ""):
            return False
        status = await self.query_job_status()
        return status is JobStatus.NOTFOUND

    async def job_end_reason(self, job_id: str) -> str:
        """Why a job ended, from the batch system (override per backend); "" if unknown."""
        return ""

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        service_url = env.get("JUPYTERHUB_SERVICE_URL")
        if service_url:  # batchspawner resets ip to 0.0.0.0; bind the notebook to loopback instead
            parts = urlsplit(service_url)
            env["JUPYTERHUB_SERVICE_URL"] = urlunsplit(
                parts._replace(netloc=f"{self.notebook_ip}:{parts.port or 0}"))
        if self._agent_token:
            env["BATCHTUNNEL_TOKEN"] = self._agent_token
            env["BATCHTUNNEL_URL"] = self.broker_url
            if self.broker_ca_file:
                with open(self.broker_ca_file, encoding="utf-8") as f:
                    env["BATCHTUNNEL_CA_PEM"] = f.read()
            if self.broker_fingerprints:
                env["BATCHTUNNEL_FINGERPRINT"] = ",".join(self.broker_fingerprints)
            env.update(self.agent_environment())
        return env

    def cmd_formatted_for_batch(self) -> str:
        return f"{self.agent_command()} -- {super().cmd_formatted_for_batch()}"

    def batch_variables(self) -> dict[str, Any]:
        """What fills the batch script's template: the admin's req_* settings, the user's checked options,
        the command, and first in the prologue, the unpacking of an inlined agent."""
        subvars: dict[str, Any] = self.get_req_subvars()
        subvars["cmd"] = self.cmd_formatted_for_batch()
        subvars.update(self.validated_options())
        unpack = self.agent_unpacking(self.batch_script)
        if unpack:
            subvars["prologue"] = f"{unpack}\n{subvars.get('prologue') or ''}"
        return subvars

    # -- the connect step

    def connect_subvars(self) -> dict[str, Any]:
        return {"tunnel_id": self.tunnel_id}

    def connect_env(self) -> dict[str, str]:
        env = super().connect_env()
        env["BATCHTUNNEL_API_URL"] = self.broker_api_url
        if self.broker_admin_token_file:
            env["BATCHTUNNEL_ADMIN_TOKEN_FILE"] = self.broker_admin_token_file
        return env

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now=now)
        finally:
            await self.delete_tunnel()

    async def poll(self) -> int | None:
        """As batchspawner's; a job found gone (cancelled, out of time) takes its tunnel with it, since
        JupyterHub does not call stop() for a server poll() finds ended."""
        status: int | None = await super().poll()
        if status is not None and self.tunnel_id:
            await self.delete_tunnel()
        return status

    async def phases_seen_elsewhere(self, timing: StartTiming) -> None:
        """When the agent connected, as the broker saw it."""
        try:
            tunnel = await self._broker("tunnel", self.tunnel_id)
        except ApiError:
            return
        since = tunnel["agent"].get("connected_since")
        if isinstance(since, (int, float)):
            timing.mark_at("agent connected to the broker", since)

    async def agent_connected(self) -> bool:
        if not self.tunnel_id:
            return False
        try:
            tunnel = await self._broker("tunnel", self.tunnel_id)
        except ApiError:
            return False
        return bool(tunnel["agent"]["connected"])

    async def progress(self) -> Any:
        """Spawn-page messages: submitted, queued (with the reason), running on a node, agent connected."""
        said = ""
        if self.previous_stop:
            yield {"progress": 0, "message": f"Your previous server stopped: {self.previous_stop}"}
        while True:
            percent, message = await self.progress_message()
            if message and message != said:
                said = message
                yield {"progress": percent, "message": message}
            await asyncio.sleep(1)

    async def progress_message(self) -> tuple[int, str]:
        """Where the spawn stands, for the page's bar (JupyterHub shows 100 when ready), and what to say."""
        if not getattr(self, "job_id", ""):
            return 10, "Submitting the batch job..."
        if self.state_ispending():
            reason = self.pending_reason()
            return 30, f"Job {self.job_id} queued" + (f": {reason}" if reason else "")
        if self.state_isrunning():
            host = self.state_gethost()
            if await self.agent_connected():
                return 80, f"Job {self.job_id} running on {host}; tunnel up, waiting for the notebook"
            return 60, f"Job {self.job_id} running on {host}; waiting for its agent to connect"
        return 0, ""

    def pending_reason(self) -> str:
        """Why the job waits, if the batch system said (override per backend)."""
        return ""

    # -- state

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.tunnel_id:
            state["tunnel_id"] = self.tunnel_id
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.tunnel_id = str(state.get("tunnel_id", ""))

    def clear_state(self) -> None:
        super().clear_state()
        # The tunnel id stays until the tunnel is deleted (by stop(), or by poll() once the job is
        # gone): batchspawner's poll() calls clear_state before ours can delete it.
