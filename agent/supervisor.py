"""``batchtunnel agent ... -- <command>``: run the job's command beside the agent.

The command is started once the agent is running (whether or not the broker
is reachable yet: the notebook must not wait for the network). Signals the
batch system sends to the agent (SIGTERM before a walltime kill, SIGINT,
SIGHUP, SIGUSR1, SIGUSR2) are forwarded to the command. When the command
exits, the agent stops and exits with the command's exit code.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from urllib.parse import urlsplit, urlunsplit

from .dialer import Agent

log = logging.getLogger(__name__)

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def exit_status(returncode: int) -> int:
    """Shell convention: a command killed by signal N exits 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def through_tunnel(env: dict[str, str], port: int) -> dict[str, str]:
    """Point the notebook's hub URLs (JUPYTERHUB_API_URL, JUPYTERHUB_ACTIVITY_URL) at 127.0.0.1:``port``."""
    rewritten = dict(env)
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL"):
        if rewritten.get(name):
            parts = urlsplit(rewritten[name])
            rewritten[name] = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    return rewritten


async def run_with_command(agent: Agent, command: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``agent`` and ``command`` (with ``env``, default ours) together; return the command's exit status."""
    loop = asyncio.get_running_loop()
    agent_task = asyncio.ensure_future(agent.run())  # owned here: cancelled and awaited in finally
    try:
        try:
            process = await asyncio.create_subprocess_exec(*command, env=env)
        except OSError as exc:
            log.error("cannot start %s: %s", command[0], exc)
            return 127
        log.info("started %s (pid %d)", command[0], process.pid)
        for sig in FORWARDED:
            loop.add_signal_handler(sig, _forward, process, sig)
        try:
            returncode = await process.wait()
        finally:
            for sig in FORWARDED:
                loop.remove_signal_handler(sig)
        log.info("%s exited with status %d", command[0], exit_status(returncode))
        return exit_status(returncode)
    finally:
        agent.stop()
        try:
            await asyncio.wait_for(asyncio.shield(agent_task), 3.0)
        except asyncio.TimeoutError:
            agent_task.cancel()
        await asyncio.gather(agent_task, return_exceptions=True)


def _forward(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if process.returncode is None:
        log.info("forwarding %s to pid %d", sig.name, process.pid)
        process.send_signal(sig)
