"""A TCP server standing in for the notebook: the first line of each connection picks a behaviour.

    echo\\n          echo everything until EOF, then close
    sink\\n          read until EOF (the client half-closed), reply with the sha256 hex, close
    source N SEED\\n send N bytes (deterministic from SEED), then close
    forever\\n       send data forever (to a client that may never read)
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

CHUNK = 256 * 1024


def block(seed: int) -> bytes:
    """1 MiB of pseudo-random bytes derived from ``seed`` (shared with the tests)."""
    out = bytearray()
    counter = 0
    while len(out) < 1024 * 1024:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[: 1024 * 1024])


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        line = (await reader.readline()).decode().split()
        if not line:
            return
        if line[0] == "echo":
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        elif line[0] == "sink":
            digest = hashlib.sha256()
            while data := await reader.read(CHUNK):
                digest.update(data)
            writer.write(digest.hexdigest().encode())
            await writer.drain()
        elif line[0] == "source":
            remaining, data = int(line[1]), block(int(line[2]))
            while remaining > 0:
                piece = data[: min(len(data), remaining)]
                writer.write(piece)
                remaining -= len(piece)
                await writer.drain()
        elif line[0] == "forever":
            data = block(0)
            while True:
                writer.write(data)
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
