"""``batchtunnel agent ... -- <command>``: the agent and the job's command, together.

The command is already running (command.py starts it before the agent's imports); here the event
loop takes over forwarding the batch system's signals (SIGTERM before a walltime kill, SIGINT,
SIGHUP, SIGUSR1, SIGUSR2) and waits for it. When the command exits, the agent stops and exits with
the command's exit status. If the agent ends first (it only does on an error: it redials forever),
the command is stopped too, since nothing could reach it, and the agent exits with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import threading
from typing import Any

from .command import FORWARDED, exit_status, stop
from .dialer import Agent

log = logging.getLogger(__name__)


async def run_with_command(agent: Agent, process: subprocess.Popen[bytes],
                           hub_api: socket.socket | None = None) -> int:
    """Run ``agent`` beside ``process`` (and serve ``hub_api``, command.hub_api_listener, if given);
    return the command's exit status."""
    loop = asyncio.get_running_loop()
    for sig in FORWARDED:  # before any await: no signal is lost between the plain handlers and these
        loop.add_signal_handler(sig, _forward, process, sig)
    exited: asyncio.Future[int] = loop.create_future()
    threading.Thread(target=_wait, args=(process, loop, exited), name=f"wait-{process.pid}", daemon=True).start()
    agent_task: asyncio.Future[None] | None = None  # owned here: stopped and awaited in finally
    try:
        if hub_api is not None:
            await agent.listen_hub_api(hub_api)
        agent_task = asyncio.ensure_future(agent.run())
        either: list[asyncio.Future[Any]] = [exited, agent_task]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            error = agent_task.exception() if not agent_task.cancelled() else None
            log.error("the agent stopped before the command: %s", error or "cancelled")
            await asyncio.to_thread(stop, process, "the agent stopped, so nothing can reach it")
            return 1
        status = exit_status(exited.result())
        log.info("%s exited with status %d", _name(process), status)
        return status
    finally:
        for sig in FORWARDED:
            loop.remove_signal_handler(sig)
        agent.stop()
        if agent_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(agent_task), 3.0)
            except asyncio.TimeoutError:
                agent_task.cancel()
            await asyncio.gather(agent_task, return_exceptions=True)


def _wait(process: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop, exited: asyncio.Future[int]) -> None:
    """In a thread of its own (as asyncio's own child watcher): wait for the command, tell the loop."""
    returncode = process.wait()
    with contextlib.suppress(RuntimeError):  # the loop is closed: the agent ended first
        loop.call_soon_threadsafe(_set, exited, returncode)


def _set(exited: asyncio.Future[int], returncode: int) -> None:
    if not exited.done():
        exited.set_result(returncode)


def _name(process: subprocess.Popen[bytes]) -> str:
    args = process.args
    return str(args[0] if isinstance(args, (list, tuple)) else args)


def _forward(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.returncode is None:
        log.info("forwarding %s to pid %d", sig.name, process.pid)
        process.send_signal(sig)
