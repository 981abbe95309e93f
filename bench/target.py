"""The benchmark's stand-in for a notebook: a threaded, blocking-socket TCP server.

First line of a connection: ``source N`` (send N bytes, close), ``sink`` (read to EOF, reply "ok"),
``echo`` (echo until EOF), ``forever`` (send until the peer goes away).
"""

from __future__ import annotations

import socket
import socketserver
import sys

BUF = memoryview(bytes(range(256)) * 4096)  # 1 MiB


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                return
            line += chunk
        words = line.decode().split()
        try:
            if words[0] == "source":
                remaining = int(words[1])
                while remaining > 0:
                    n = min(remaining, len(BUF))
                    sock.sendall(BUF[:n])
                    remaining -= n
            elif words[0] == "sink":
                buf = bytearray(1 << 20)
                while sock.recv_into(buf):
                    pass
                sock.sendall(b"ok")
            elif words[0] == "echo":
                buf = bytearray(65536)
                while n := sock.recv_into(buf):
                    sock.sendall(memoryview(buf)[:n])
            elif words[0] == "forever":
                while True:
                    sock.sendall(BUF)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


if __name__ == "__main__":
    with Server(("127.0.0.1", int(sys.argv[1])), Handler) as server:
        server.serve_forever()
