"""Resumption under fire: a download while the agent's link to the broker is reset again and again.

    .venv/bin/python bench/resume.py [--size-mib 1024] [--interval 1.0] [--rounds 3] [--write-docs]

Broker and agent as shipped (TLS, uvloop broker, asyncio agent, backoff 0.5 s with jitter, resume
grace 60 s), except that the agent dials through a relay in this process that resets every connection
through it (both ways, RST) every ``--interval`` seconds: a proxy killing the WebSocket, a NAT
reboot. Each round downloads ``--size-mib`` from bench/target.py once over an intact link and once
under the resets, checking every byte against the target's pattern. Figures: MB/s of both; resets
and resumes; per resume, seconds from the link's loss to the session resumed (the broker's log) and
bytes the agent sent again (its log). Results go to docs/benchmarks.md between the resume markers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BT, MB, MIB, PY, ROOT, Procs, free_port, median_cell, repeat, request, wait_agent, wait_port, write_docs

sys.path.insert(0, str(ROOT))
from batchtunnel.client import BrokerClient

ADMIN = "bench-admin-token-0123456789"
PATTERN = bytes(range(256)) * (MIB // 256 + 2)  # bench/target.py sends byte i as i % 256


class Relay:
    """127.0.0.1:<port> -> target, on its own loop in a thread; ``cut()`` resets every connection."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._transports: set[asyncio.Transport] = set()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(self._loop.create_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def _accept(self) -> asyncio.Protocol:
        return _Half(self, None)

    def cut(self) -> None:
        def reset() -> None:
            for transport in list(self._transports):
                transport.abort()
            self.cuts += 1
        self._loop.call_soon_threadsafe(reset)


class _Half(asyncio.Protocol):
    """One side of a relayed connection; the other side is ``peer``."""

    def __init__(self, relay: Relay, peer: _Half | None) -> None:
        self.relay = relay
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.dial: asyncio.Future[None] | None = None  # owned: the relay's loop runs until exit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.relay._transports.add(self.transport)  # type: ignore[arg-type]
        if self.peer is None:  # accepted: dial the target
            self.transport.pause_reading()  # type: ignore[union-attr]
            self.dial = asyncio.ensure_future(self._dial())
        else:
            self.peer.peer = self
            self.peer.transport.resume_reading()  # type: ignore[union-attr]

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _Half(self.relay, self), "127.0.0.1", self.relay.target)
        except OSError:
            self.transport.abort()  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay._transports.discard(self.transport)  # type: ignore[arg-type]
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.abort()


def checked_download(port: int, size: int) -> float:
    """Seconds to receive ``size`` bytes, each checked against the target's pattern."""
    buf = bytearray(MIB)
    view = memoryview(buf)
    start = time.perf_counter()
    s = request(port, f"source {size}")
    got = 0
    while n := s.recv_into(buf):
        offset = got % 256
        if view[:n] != PATTERN[offset:offset + n]:
            raise RuntimeError(f"corrupt data at byte {got}")
        got += n
    s.close()
    if got != size:
        raise RuntimeError(f"received {got} of {size} bytes")
    return time.perf_counter() - start


def one_round(size: int, interval: float) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bt-resume-"))
    procs = Procs(workdir)
    try:
        pki = workdir / "pki"
        subprocess.run([BT, "certs", "init", "--dir", str(pki), "--hostname", "localhost"], check=True,
                       stdout=subprocess.DEVNULL)
        target, agent_port, api_port = free_port(), free_port(), free_port()
        procs.start("target", [PY, str(ROOT / "bench" / "target.py"), str(target)])
        procs.start("broker", [BT, "broker", "--listen", f"127.0.0.1:{agent_port}", "--api-listen",
                               f"127.0.0.1:{api_port}", "--cert", str(pki / "broker.pem"), "--key",
                               str(pki / "broker-key.pem"), "--database", ":memory:"],
                    {"BATCHTUNNEL_ADMIN_TOKEN": ADMIN})
        wait_port(api_port)
        wait_port(target)
        relay = Relay(agent_port)
        client = BrokerClient(f"http://127.0.0.1:{api_port}", ADMIN)
        tunnel = client.create_tunnel("resume")
        procs.start("agent", [BT, "agent", "--url", f"wss://localhost:{relay.port}/agent", "--cafile",
                              str(pki / "ca.pem")], {"BATCHTUNNEL_TOKEN": tunnel["token"]})
        wait_agent(client, tunnel["id"])
        port = client.expose(tunnel["id"], 0, target)["port"]

        intact = checked_download(port, size)
        done = threading.Event()

        def cutter() -> None:
            while not done.wait(interval):
                relay.cut()

        thread = threading.Thread(target=cutter, daemon=True)
        thread.start()
        try:
            cut = checked_download(port, size)
        finally:
            done.set()
            thread.join()
        wait_agent(client, tunnel["id"], 30)  # the last cut's resumption, before reading the logs
        broker_log = (workdir / "broker.log").read_text()
        agent_log = (workdir / "agent.log").read_text()
        downs = [float(x) for x in re.findall(r"resumed after ([0-9.]+) s", broker_log)]
        replayed = [int(x) for x in re.findall(r"(\d+) bytes sent again", agent_log)]
        lost = sum(int(x) for x in re.findall(r"(\d+) reset \(the peer had lost them\)", broker_log))
        return {
            "intact_mbps": size / intact / MB,
            "cut_mbps": size / cut / MB,
            "cuts": relay.cuts,
            "resumes": len(downs),
            "down_p50": statistics.median(downs) if downs else float("nan"),
            "down_max": max(downs) if downs else float("nan"),
            "replayed_p50_kib": statistics.median(replayed) / 1024 if replayed else float("nan"),
            "replayed_max_kib": max(replayed) / 1024 if replayed else float("nan"),
            "streams_lost": lost,
        }
    finally:
        procs.stop()


def render(runs: list[dict[str, float]], size_mib: int, interval: float) -> str:
    def cell(key: str, fmt: str = ".0f") -> str:
        return median_cell(runs, key, fmt)

    return "\n".join([
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{len(runs)} rounds, median (min-max). {size_mib} MiB download, the agent's link reset every "
        f"{interval:g} s; every byte checked.",
        "",
        "| intact link MB/s | link reset every interval, MB/s | resets | resumes | streams lost "
        "| loss to resumed p50, s | max, s | resent by the agent per resume p50, KiB | max, KiB |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {cell('intact_mbps')} | {cell('cut_mbps')} | {cell('cuts')} | {cell('resumes')} "
        f"| {cell('streams_lost')} | {cell('down_p50', '.2f')} | {cell('down_max', '.2f')} "
        f"| {cell('replayed_p50_kib')} | {cell('replayed_max_kib')} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    runs = repeat(args.rounds, lambda: one_round(args.size_mib * MIB, args.interval), "round")
    table = render(runs, args.size_mib, args.interval)
    print(table)
    if args.write_docs:
        write_docs(table, "resume")


if __name__ == "__main__":
    main()
