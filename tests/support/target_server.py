"""A TCP server standing in for the notebook, for the tests and the benchmark. The first line of each
connection picks a behaviour:

    echo\\n            echo everything until EOF, then close
    sink\\n            read until EOF (the client half-closed), reply with the sha256 hex, close
    sink count\\n      the same, but reply with the number of bytes read (no hashing: the benchmark's)
    source N SEED\\n   send N bytes, ``block(SEED)`` over and over, then close
    forever\\n         send ``block(0)`` over and over until the peer goes away (it may never read)

Threads and blocking sockets rather than asyncio: the benchmark measures tunnels against this server,
so it must be faster than any of them and must not share an event loop with what it serves.

    python -m tests.support.target_server PORT      (from the repository root)
"""

from __future__ import annotations

import functools
import hashlib
import random
import socket
import socketserver
import sys

MIB = 1024 * 1024
BUFFER = MIB  # per recv_into: few system calls per megabyte
MAX_LINE = 256


@functools.cache
def block(seed: int) -> bytes:
    """1 MiB of pseudo-random bytes from ``seed``, computed once per seed: what ``source`` sends, and
    what a client compares its bytes with (random, so a byte received at the wrong offset shows)."""
    return random.Random(seed).randbytes(MIB)


def first_line(sock: socket.socket) -> list[str]:
    """The request's words. Byte by byte, so nothing after the newline is consumed: that is the data."""
    line = bytearray()
    while not line.endswith(b"\n"):
        if len(line) > MAX_LINE or not (byte := sock.recv(1)):
            return []
        line += byte
    return line.decode(errors="replace").split()


def send_repeated(sock: socket.socket, data: bytes, size: int | None) -> None:
    """``size`` bytes of ``data`` repeated (None: until the peer goes away), without copying it."""
    view = memoryview(data)
    while size is None or size > 0:
        n = len(view) if size is None else min(size, len(view))
        sock.sendall(view[:n])
        if size is not None:
            size -= n


class Handler(socketserver.BaseRequestHandler):
    request: socket.socket

    def handle(self) -> None:
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        words = first_line(sock)
        try:
            match words:
                case ["echo"]:
                    buf = memoryview(bytearray(BUFFER))
                    while n := sock.recv_into(buf):
                        sock.sendall(buf[:n])
                case ["sink", *how] if how in ([], ["count"]):
                    buf = memoryview(bytearray(BUFFER))
                    digest, count = hashlib.sha256(), 0
                    while n := sock.recv_into(buf):
                        count += n
                        if not how:
                            digest.update(buf[:n])
                    sock.sendall(str(count).encode() if how else digest.hexdigest().encode())
                case ["source", size, seed]:
                    send_repeated(sock, block(int(seed)), int(size))
                case ["forever"]:
                    send_repeated(sock, block(0), None)
        except (OSError, ValueError):  # the peer went away, or asked for nonsense: close
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a ``forever`` whose reader never reads must not hold up the exit
    allow_reuse_address = True
    request_queue_size = 256  # a burst of connections (16 streams at once) waits instead of being refused


def main() -> None:
    with Server(("127.0.0.1", int(sys.argv[1])), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
