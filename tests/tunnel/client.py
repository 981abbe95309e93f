"""Client-side helpers: talk to the target server through a hub-side port."""

from __future__ import annotations

import asyncio
import hashlib

from tests.support.target_server import block

CHUNK = 256 * 1024


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, limit=4 * 1024 * 1024)


async def upload(port: int, size: int, seed: int = 1) -> tuple[str, str]:
    """Send ``size`` bytes to ``sink``, half-close, read the digest. Returns (expected, reported)."""
    reader, writer = await connect(port)
    writer.write(b"sink\n")
    data = block(seed)
    digest = hashlib.sha256()
    remaining = size
    while remaining:
        piece = data[: min(len(data), remaining)]
        digest.update(piece)
        writer.write(piece)
        await writer.drain()
        remaining -= len(piece)
    writer.write_eof()
    reported = (await reader.read()).decode()
    writer.close()
    return digest.hexdigest(), reported


async def download(port: int, size: int, seed: int = 2) -> tuple[str, str, int]:
    """Ask ``source`` for ``size`` bytes. Returns (expected digest, received digest, received size)."""
    reader, writer = await connect(port)
    writer.write(f"source {size} {seed}\n".encode())
    await writer.drain()
    got = hashlib.sha256()
    n = 0
    while chunk := await reader.read(CHUNK):
        got.update(chunk)
        n += len(chunk)
    writer.close()
    expected = hashlib.sha256()
    data, remaining = block(seed), size
    while remaining:
        piece = data[: min(len(data), remaining)]
        expected.update(piece)
        remaining -= len(piece)
    return expected.hexdigest(), got.hexdigest(), n


async def echo(port: int, payload: bytes) -> bytes:
    reader, writer = await connect(port)
    try:
        writer.write(b"echo\n" + payload)
        await writer.drain()
        writer.write_eof()
        return await reader.read()
    finally:
        writer.close()


async def closed_promptly(port: int, timeout: float = 5.0) -> bool:
    """True if the broker closes (or resets) a new connection without being sent anything."""
    try:
        reader, writer = await connect(port)
    except ConnectionError:
        return True
    try:
        data = await asyncio.wait_for(reader.read(), timeout)
        return data == b""
    except ConnectionError:
        return True
    finally:
        writer.close()
