"""Whether the notebook answers HTTP yet, asked every 50 ms before start() returns.

JupyterHub checks a started server's address itself, but with pauses that double (0.2, 0.4, 0.8,
1.6 s, ... with jitter), so a notebook that began answering just after a check waits for the next
one: 0.03-1.4 s per start on real Slurm here (docs/benchmarks.md, "Time to a usable notebook"). Once
start() has seen an answer, JupyterHub's first check succeeds.

Through the tunnel, a connection to the hub-side port succeeds at once (the broker listens); until
the notebook listens the agent refuses the stream and the broker closes the connection, so only an
HTTP status line counts.
"""

from __future__ import annotations

import asyncio
import contextlib

POLL = 0.05
"""Seconds between two checks."""
ATTEMPT_TIMEOUT = 2.0
"""Seconds one check may take (a notebook busy starting answers late)."""


async def answers_http(host: str, port: int, path: str, timeout: float) -> bool:
    """One GET of ``path``: did an HTTP status line come back (any status: a redirect, a 403)?"""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"HTTP/")
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def wait_answering(host: str, port: int, path: str, limit: float) -> tuple[float, int, bool]:
    """Check every POLL seconds until the notebook answers or ``limit`` seconds pass; returns the
    seconds waited, the checks made, and whether it answered."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempts = 0
    while True:
        attempts += 1
        remaining = limit - (loop.time() - started)
        if await answers_http(host, port, path, max(0.05, min(ATTEMPT_TIMEOUT, remaining))):
            return loop.time() - started, attempts, True
        if loop.time() - started + POLL >= limit:
            return loop.time() - started, attempts, False
        await asyncio.sleep(POLL)
