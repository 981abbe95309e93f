"""An agent facing a broker that is hostile (or an impostor with the right certificate): it must not be
parked, flooded or made to leak anything."""

from __future__ import annotations

import asyncio
import ssl

from tests.support.processes import BIN, ProcessGroup, eventually, free_port
from tests.support.tunnel import Pki


async def test_retry_after_is_capped_at_the_longest_backoff(procs: ProcessGroup, pki: Pki) -> None:
    """A 429 with Retry-After: 99999999 was obeyed; now the agent waits at most --backoff-max."""
    attempts: list[float] = []
    loop = asyncio.get_running_loop()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(loop.time())
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 99999999\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.cert, pki.key)
    port = free_port()
    server = await asyncio.start_server(refuse, "127.0.0.1", port, ssl=ctx)
    async with server:
        agent = procs.start("agent", [str(BIN / "batchtunnel"), "agent", "--url", f"wss://localhost:{port}/agent",
                                      "--cafile", pki.ca, "--backoff-initial", "0.2", "--backoff-max", "1"],
                            env={"BATCHTUNNEL_TOKEN": "tabc.def"})
        await eventually(lambda: len(attempts) >= 3, 10, "the agent to come back twice despite Retry-After")
    assert attempts[2] - attempts[1] < 2.5
    assert "it asks to retry in 99999999 s (waiting 1 s at most)" in agent.log()
