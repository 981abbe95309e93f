"""The job's command (``batchtunnel agent ... -- COMMAND``), started before the agent loads asyncio,
TLS and websockets: the notebook's own start, the longest phase of a spawn, does not wait for them
(docs/benchmarks.md, "Time to a usable notebook"). Standard library only, and light: this module
runs before those imports.

Until the event loop takes over (supervisor.py), plain signal handlers forward the batch system's
signals to the command.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import socket

log = logging.getLogger(__name__)

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
"""What the batch system sends (SIGTERM before a walltime kill, ...) that goes on to the command."""

STOP_GRACE = 10.0
"""Seconds the command has after SIGTERM, when the agent ends before it, until SIGKILL."""


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


def hub_api_listener() -> socket.socket:
    """Single-outbound-port mode: a listening socket on a free 127.0.0.1 port, made before the command
    starts so that its environment can name the port; the agent serves it (Agent.listen_hub_api).
    Connections that come before then wait in its backlog."""
    import socket  # only in this mode: the others start the command without it

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` with ``env`` and forward FORWARDED signals to it. Raises OSError when it
    cannot start (not found, not executable)."""
    process = subprocess.Popen(command, env=env)

    def forward(signum: int, frame: FrameType | None) -> None:
        if process.returncode is None:
            process.send_signal(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    log.info("started %s (pid %d)", command[0], process.pid)
    return process


def stop(process: subprocess.Popen[bytes], why: str) -> None:
    """End the command if it still runs (SIGTERM, SIGKILL after STOP_GRACE seconds)."""
    if process.poll() is None:
        log.warning("stopping the command (pid %d): %s", process.pid, why)
        process.terminate()
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            log.warning("the command (pid %d) outlived SIGTERM by %.0f s: SIGKILL", process.pid, STOP_GRACE)
            process.kill()
            process.wait()
