"""TLS on the socket against the event loops' TLS layers: what one side of a TLS connection costs.

    .venv/bin/python -m bench.tls_layer [--rounds 3] [--write-docs]     (from the repository root)

The event loops' TLS layers (asyncio's sslproto, uvloop's) run OpenSSL on memory buffers: each read
lands in the layer's own 256 KiB buffer, is copied into an incoming memory BIO, decrypted into the
protocol's buffer; each write is encrypted into an outgoing BIO, copied out and sent. A non-blocking
``ssl.SSLSocket`` lets OpenSSL read and write the socket itself (no BIO copies, no 256 KiB buffer per
connection), driven here by the loop's ``add_reader``/``add_writer``. This benchmark measures, in the
process that holds the server side of the connection (the broker's side), with the client side a
blocking ``SSLSocket`` in another process (C code, cheap, the same for every variant):

- receiving 1 GiB and sending 1 GiB in 256 KiB reads and writes: CPU seconds per GiB;
- 20,000 round trips of 100 bytes echoed: CPU µs per round trip;
- 1,000 idle connections after a TLS handshake and one small message: RSS per connection.

Each figure comes from a fresh process; rounds are interleaved; median (min-max) of the rounds.
It decides whether the broker's TLS belongs on the socket rather than in the loop (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import resource
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .harness import GIB, PY, ROOT, make_pki, range_cell, run_line, status_kib, write_docs

CHUNK = 256 * 1024
ROUND_TRIPS = 20_000
IDLE = 1000
VARIANTS = {
    "uvloop TLS layer (the broker as shipped)": ("uvloop", "layer"),
    "asyncio TLS layer (the agent as shipped)": ("asyncio", "layer"),
    "SSLSocket on uvloop (TLS on the socket)": ("uvloop", "socket"),
    "SSLObject on uvloop, reads into a shared buffer": ("uvloop", "bio"),
}
TESTS = ("receive", "send", "round_trip", "idle")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kib() -> int:
    return status_kib(os.getpid(), "VmRSS")


# -- the client side: a blocking SSLSocket in its own process

def client(pki: str, port: int, test: str, connections: int) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{pki}/ca.pem")
    socks = []
    for _ in range(connections):
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(ctx.wrap_socket(raw, server_hostname="localhost"))
    s = socks[0]
    if test == "receive":  # the server receives: send it 1 GiB, then wait for its one-byte answer
        data = b"x" * CHUNK
        for _ in range(GIB // CHUNK):
            s.sendall(data)
        s.recv(1)
    elif test == "send":
        s.sendall(b"go")
        view, got = memoryview(bytearray(CHUNK)), 0
        while got < GIB:
            got += s.recv_into(view)
        s.sendall(b"k")
    elif test == "round_trip":
        message = b"m" * 100
        for _ in range(ROUND_TRIPS):
            s.sendall(message)
            got = 0
            while got < len(message):
                got += len(s.recv(len(message) - got))
    else:  # idle: one small message each, then hold them until the server is done
        for sock in socks:
            sock.sendall(b"hello")
        s.recv(1)


# -- the server side, two ways

class LayerProtocol(asyncio.BufferedProtocol):
    """The server side on the loop's TLS layer (what session/websocket.py's link is)."""

    buffer = memoryview(bytearray(CHUNK))

    def __init__(self, on_data: Callable[[LayerProtocol, memoryview], None]) -> None:
        self.on_data = on_data
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.on_data(self, self.buffer[:nbytes])

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class SocketSide:
    """The server side as a non-blocking SSLSocket driven by add_reader/add_writer."""

    buffer = memoryview(bytearray(CHUNK))

    def __init__(self, sock: ssl.SSLSocket, on_data: Callable[[SocketSide, memoryview], None]) -> None:
        self.sock, self.on_data = sock, on_data
        self.loop = asyncio.get_running_loop()
        self.fd = sock.fileno()
        self.pending: memoryview | None = None  # a write OpenSSL must be given again, unchanged
        self.writable = asyncio.Event()
        self.writable.set()

    async def handshake(self) -> None:
        done = self.loop.create_future()

        def step() -> None:
            try:
                self.sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            self.loop.remove_reader(self.fd)
            done.set_result(None)

        self.loop.add_reader(self.fd, step)
        step()
        await done
        self.loop.add_reader(self.fd, self.readable)

    def readable(self) -> None:
        try:
            while True:
                n = self.sock.recv_into(self.buffer)
                if not n:
                    self.loop.remove_reader(self.fd)
                    return
                self.on_data(self, self.buffer[:n])
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass

    def write(self, data: memoryview) -> None:
        """Write now what the socket takes; the rest when it is writable (one write pending at most)."""
        assert self.pending is None
        self.pending = data
        self._flush()
        if self.pending is not None:
            self.writable.clear()
            self.loop.add_writer(self.fd, self._on_writable)

    def _flush(self) -> None:
        try:
            while self.pending is not None:
                n = self.sock.send(self.pending)
                self.pending = self.pending[n:] if n < len(self.pending) else None
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            pass

    def _on_writable(self) -> None:
        self._flush()
        if self.pending is None:
            self.loop.remove_writer(self.fd)
            self.writable.set()


class BioSide:
    """The server side as an SSLObject on memory BIOs, the socket read into one buffer shared by every
    connection (what the loops' TLS layers do, without a 256 KiB buffer per connection), in Python."""

    raw = memoryview(bytearray(CHUNK))
    buffer = memoryview(bytearray(CHUNK))

    def __init__(self, ctx: ssl.SSLContext, sock: socket.socket,
                 on_data: Callable[[BioSide, memoryview], None]) -> None:
        self.sock, self.on_data = sock, on_data
        sock.setblocking(False)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.loop = asyncio.get_running_loop()
        self.fd = sock.fileno()
        self.unsent: memoryview | None = None  # encrypted bytes the socket did not take yet
        self.writable = asyncio.Event()
        self.writable.set()

    async def handshake(self) -> None:
        done = self.loop.create_future()

        def step() -> None:
            self._receive()
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._send(b"")
                return
            self._send(b"")
            self.loop.remove_reader(self.fd)
            done.set_result(None)

        self.loop.add_reader(self.fd, step)
        await done
        self.loop.add_reader(self.fd, self.readable)

    def _receive(self) -> bool:
        """Move what the socket has into the incoming BIO; False at its end."""
        try:
            n = self.sock.recv_into(self.raw)
        except BlockingIOError:
            return True
        self.incoming.write(self.raw[:n])
        return n > 0

    def readable(self) -> None:
        if not self._receive():
            self.loop.remove_reader(self.fd)
            return
        try:
            while True:
                n = self.tls.read(CHUNK, self.buffer)
                if not n:
                    return
                self.on_data(self, self.buffer[:n])
        except ssl.SSLWantReadError:
            pass
        if self.outgoing.pending:  # post-handshake messages
            self._send(b"")

    def write(self, data: memoryview) -> None:
        self.tls.write(data)
        self._send(b"")

    def _send(self, _: bytes) -> None:
        if self.outgoing.pending:
            data = memoryview(self.outgoing.read())
            self.unsent = data if self.unsent is None else memoryview(bytes(self.unsent) + bytes(data))
        if self.unsent is None:
            return
        try:
            n = self.sock.send(self.unsent)
        except BlockingIOError:
            n = 0
        self.unsent = self.unsent[n:] if n < len(self.unsent) else None
        if self.unsent is not None and self.writable.is_set():
            self.writable.clear()
            self.loop.add_writer(self.fd, self._on_writable)

    def _on_writable(self) -> None:
        self._send(b"")
        if self.unsent is None:
            self.loop.remove_writer(self.fd)
            self.writable.set()


async def serve(way: str, pki: str, test: str) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{pki}/broker.pem", f"{pki}/broker-key.pem")
    listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
    listener.setblocking(False)
    connections = IDLE + 20 if test == "idle" else 1
    peer = multiprocessing.Process(target=client, args=(pki, listener.getsockname()[1], test, connections))
    peer.start()
    received = [0]
    goal = {"receive": GIB, "send": 3, "round_trip": 100 * ROUND_TRIPS, "idle": 5 * connections}[test]
    go = asyncio.Event()  # send: the client is ready
    finished = asyncio.Event()  # all the client sends has arrived

    def send(side: Any, data: memoryview) -> None:
        side.transport.write(data) if way == "layer" else side.write(data)

    def on_data(side: Any, data: memoryview) -> None:
        received[0] += len(data)
        if test == "round_trip":
            send(side, memoryview(bytes(data)))
        go.set()
        if received[0] >= goal:
            finished.set()

    sides: list[Any] = []
    start = cpu_seconds()
    baseline = 0
    for n in range(connections):
        sock, _ = await loop.sock_accept(listener)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if way == "layer":
            protocol = LayerProtocol(on_data)
            await loop.connect_accepted_socket(lambda p=protocol: p, sock, ssl=ctx)  # type: ignore[misc]
            sides.append(protocol)
        elif way == "socket":
            side = SocketSide(ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), on_data)
            await side.handshake()
            sides.append(side)
        else:
            bio_side = BioSide(ctx, sock, on_data)
            await bio_side.handshake()
            sides.append(bio_side)
        if test == "idle" and n == 19:  # the first 20 pay what is paid once
            await asyncio.sleep(0.5)
            gc.collect()
            baseline = rss_kib()
    side = sides[0]
    if test == "send":
        await go.wait()
        start = cpu_seconds()
        data = memoryview(b"y" * CHUNK)
        for _ in range(GIB // CHUNK):
            await side.writable.wait()
            send(side, data)
    await finished.wait()
    end = cpu_seconds()
    if test == "idle":
        await asyncio.sleep(1.0)  # what the last connections' handshakes left settles
        gc.collect()
        figure = (rss_kib() - baseline) / IDLE
    elif test == "round_trip":
        figure = (end - start) / ROUND_TRIPS * 1e6
    else:
        figure = end - start
    if test in ("receive", "idle"):
        send(side, memoryview(b"k"))
    await asyncio.sleep(0.1)
    await loop.run_in_executor(None, peer.join, 30)
    return {test: figure}


def child(variant: str, pki: str, test: str) -> None:
    loop_name, way = VARIANTS[variant]
    if loop_name == "uvloop":
        import uvloop
        result = uvloop.run(serve(way, pki, test))
    else:
        result = asyncio.run(serve(way, pki, test))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help="rewrite its table in docs/benchmarks.md")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "PKI", "TEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    pki = str(make_pki(Path(tempfile.mkdtemp(prefix="bt-tls-")) / "pki"))
    results: dict[str, dict[str, list[float]]] = {v: {t: [] for t in TESTS} for v in VARIANTS}
    for r in range(args.rounds):
        for test in TESTS:
            for variant in VARIANTS:
                out = subprocess.run([PY, "-m", "bench.tls_layer", "--child", variant, pki, test], cwd=ROOT,
                                     check=True, capture_output=True, text=True, timeout=300).stdout
                results[variant][test].append(json.loads(out.splitlines()[-1])[test])
        print(f"round {r + 1}: " + "; ".join(f"{v}: " + ", ".join(f"{t} {results[v][t][-1]:.3g}" for t in TESTS)
                                             for v in VARIANTS), flush=True)
    lines = [run_line(f"{args.rounds} rounds, a fresh process per figure, median (min-max); the server "
                      "side of one TLS 1.3 connection (the broker's side), the client a blocking SSLSocket."),
             "",
             "| server side | CPU s per GiB received | CPU s per GiB sent | CPU µs per round trip "
             f"| KiB per idle connection ({IDLE}) |",
             "|---|---|---|---|---|"]
    for variant in VARIANTS:
        rec = results[variant]
        lines.append(f"| {variant} | {range_cell(rec['receive'], '.3f')} | {range_cell(rec['send'], '.3f')} | "
                     f"{range_cell(rec['round_trip'], '.1f')} | {range_cell(rec['idle'], '.1f')} |")
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        write_docs(table, "tls-layer")


if __name__ == "__main__":
    main()
