"""Resumption under fire: a download while the agent's link to the broker is reset again and again.

    .venv/bin/python -m bench.resume [--size-mib 1024] [--interval 1.0] [--rounds 3] [--write-docs]

Run from the repository root. Broker and agent as shipped (TLS, uvloop broker, asyncio agent, backoff
0.5 s with jitter, resume grace 60 s), except that the agent dials through a relay in this process that
resets every connection through it (both ways, RST) every ``--interval`` seconds: a proxy killing the
WebSocket, a NAT reboot. Each round downloads ``--size-mib`` from the target
(tests/support/target_server.py) once over an intact link and once under the resets, checking every
byte against what the target sent. Figures: MB/s of both; resets and resumes; per resume, seconds
from the link's loss to the session resumed (the broker's log) and bytes the agent sent again (its
log). Results go to docs/benchmarks.md between the resume markers.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import threading
from pathlib import Path

from tests.support.processes import ProcessGroup

from .harness import (
    MB,
    MIB,
    agent_argv,
    download,
    make_pki,
    repeat,
    results_table,
    start_broker,
    start_target,
    wait_agent,
    write_docs,
)


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
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.relay._transports.add(transport)
        if self.peer is None:  # accepted: dial the target
            transport.pause_reading()
            self.dial = asyncio.ensure_future(self._dial(transport))
        else:
            self.peer.peer = self
            if self.peer.transport is not None:
                self.peer.transport.resume_reading()

    async def _dial(self, accepted: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _Half(self.relay, self), "127.0.0.1", self.relay.target)
        except OSError:
            accepted.abort()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.relay._transports.discard(self.transport)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.abort()


def one_round(size: int, interval: float) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bt-resume-"))
    procs = ProcessGroup(workdir)
    try:
        pki = make_pki(workdir / "pki")
        target = start_target(procs)
        broker = start_broker(procs, pki)
        relay = Relay(broker.agent_port)
        client = broker.client
        tunnel = client.create_tunnel("resume")
        procs.start("agent", agent_argv(pki, relay.port), env={"BATCHTUNNEL_TOKEN": tunnel["token"]})
        wait_agent(client, tunnel["id"])
        port = client.expose(tunnel["id"], 0, target)["port"]

        intact = download(port, size, check=True)
        done = threading.Event()

        def cutter() -> None:
            while not done.wait(interval):
                relay.cut()

        thread = threading.Thread(target=cutter, daemon=True)
        thread.start()
        try:
            cut = download(port, size, check=True)
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
        procs.stop_all()


def render(runs: list[dict[str, float]], size_mib: int, interval: float) -> str:
    return results_table(runs, f"rounds; {size_mib} MiB download, the agent's link reset every {interval:g} s; every "
                   "byte checked", [
                       ("intact link MB/s", "intact_mbps", ".0f"),
                       ("link reset every interval, MB/s", "cut_mbps", ".0f"),
                       ("resets", "cuts", ".0f"), ("resumes", "resumes", ".0f"),
                       ("streams lost", "streams_lost", ".0f"),
                       ("loss to resumed p50, s", "down_p50", ".2f"), ("max, s", "down_max", ".2f"),
                       ("resent by the agent per resume p50, KiB", "replayed_p50_kib", ".0f"),
                       ("max, KiB", "replayed_max_kib", ".0f"),
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
