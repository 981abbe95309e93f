"""What one broker carries: many idle agents, and many agents moving data at once.

    .venv/bin/python -m bench.capacity [--idle 1000,5000] [--active 50] [--seconds 20] [--write-docs]

Idle: for each count, a fresh broker (shipped settings) and that many tunnels; their agents (the
agent's own code, 500 per process, bench/idle_agents.py) connect and stay idle. Figures: the broker's
RSS and descriptors before the agents connect and once all are connected and a heartbeat interval has
passed, per agent; the broker's CPU while they sit idle (heartbeats only), over ``--idle-seconds``.

Active: a fresh broker, ``--active`` tunnels each exposing the target, agents 10 per process, one
downloading thread per tunnel asking for as much as it can for ``--seconds``. Figures: aggregate MB/s,
each tunnel's share (the slowest against the mean: fairness), and the broker's CPU per GiB moved.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
from batchtunnel.client import BrokerClient

from tests.support.processes import ProcessGroup, wait_until

from .harness import (
    GIB,
    MB,
    MIB,
    make_pki,
    request,
    run_line,
    start_broker,
    start_idle_agents,
    start_target,
    status_kib,
    write_docs,
)

IDLE_PER_PROCESS = 500
ACTIVE_PER_PROCESS = 10
SETTLE = 6.0  # seconds after the last agent connected: past one heartbeat interval (5 s)


def broker(procs: ProcessGroup, workdir: Path, name: str) -> tuple[psutil.Process, BrokerClient, str, str]:
    started = start_broker(procs, make_pki(workdir / f"pki-{name}"), name=f"broker-{name}")
    return psutil.Process(started.proc.pid), started.client, started.url, started.ca


def connected(client: BrokerClient) -> int:
    return sum(1 for t in client.tunnels() if t["agent"]["connected"])


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def idle(count: int, idle_seconds: float) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bt-capacity-"))
    procs = ProcessGroup(workdir)
    try:
        process, client, url, ca = broker(procs, workdir, f"idle{count}")
        tokens = [client.create_tunnel(f"idle{i}")["token"] for i in range(count)]
        time.sleep(1)  # the API's answers are out; nothing else is going on
        rss0, fds0 = status_kib(process.pid, "VmRSS"), process.num_fds()
        start = time.monotonic()
        for g, first in enumerate(range(0, count, IDLE_PER_PROCESS)):
            start_idle_agents(procs, url, ca, tokens[first:first + IDLE_PER_PROCESS], name=f"idle-{count}-{g}")
        wait_until(lambda: connected(client) == count, 300, f"{count} agents to connect")
        all_in = time.monotonic() - start
        time.sleep(SETTLE)
        rss1, fds1 = status_kib(process.pid, "VmRSS"), process.num_fds()
        cpu0 = cpu(process)
        time.sleep(idle_seconds)
        idle_cores = (cpu(process) - cpu0) / idle_seconds
        still = connected(client)
    finally:
        procs.stop_all()
    if still != count:
        raise RuntimeError(f"{count - still} of {count} agents dropped while idle")
    return {"agents": count, "connect_s": all_in, "rss_before_mib": rss0 / 1024, "rss_after_mib": rss1 / 1024,
            "kib_per_agent": (rss1 - rss0) / count, "fds_per_agent": (fds1 - fds0) / count,
            "idle_cores": idle_cores, "idle_cpu_us_per_agent_s": idle_cores / count * 1e6}


def active(count: int, seconds: float) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bt-capacity-"))
    procs = ProcessGroup(workdir)
    received = [0] * count
    stop = threading.Event()
    errors: list[str] = []

    def pull(i: int, port: int) -> None:
        buf = bytearray(MIB)
        while not stop.is_set():
            try:
                s = request(port, f"source {1 << 40} {i + 1}")
                while not stop.is_set() and (n := s.recv_into(buf)):
                    received[i] += n
                s.close()
            except OSError as exc:
                errors.append(f"tunnel {i}: {exc!r}")
                return

    try:
        target = start_target(procs)
        process, client, url, ca = broker(procs, workdir, "active")
        tunnels = [client.create_tunnel(f"active{i}") for i in range(count)]
        ports = [client.expose(t["id"], 0, target)["port"] for t in tunnels]
        tokens = [t["token"] for t in tunnels]
        for g, first in enumerate(range(0, count, ACTIVE_PER_PROCESS)):
            start_idle_agents(procs, url, ca, tokens[first:first + ACTIVE_PER_PROCESS], name=f"active-{g}")
        wait_until(lambda: connected(client) == count, 120, f"{count} agents to connect")
        threads = [threading.Thread(target=pull, args=(i, p), daemon=True) for i, p in enumerate(ports)]
        for t in threads:
            t.start()
        time.sleep(3)  # every stream past its first windows: the window growth is not what is measured
        before, cpu0, t0 = list(received), cpu(process), time.monotonic()
        time.sleep(seconds)
        after, cpu1, t1 = list(received), cpu(process), time.monotonic()
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        stop.set()
        procs.stop_all()
    if errors:
        raise RuntimeError("; ".join(errors[:5]))
    rates = [(b - a) / (t1 - t0) / MB for a, b in zip(before, after, strict=True)]
    moved = sum(after) - sum(before)
    mean = statistics.mean(rates)
    return {"agents": count, "seconds": t1 - t0, "aggregate_mb_s": sum(rates), "mean_mb_s": mean,
            "slowest_mb_s": min(rates), "fastest_mb_s": max(rates), "fairness": min(rates) / mean,
            "broker_cores": (cpu1 - cpu0) / (t1 - t0), "broker_cpu_s_per_gib": (cpu1 - cpu0) / (moved / GIB)}


def render(idles: list[dict[str, float]], act: dict[str, float] | None) -> str:
    lines = [run_line("a fresh broker (shipped settings) per line."), ""]
    if idles:
        lines += ["| idle agents | all connected after, s | broker RSS before, MiB | after, MiB | KiB per agent | "
                  "descriptors per agent | broker CPU while idle, cores | CPU µs per agent per second |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in idles:
            lines.append(f"| {r['agents']:.0f} | {r['connect_s']:.1f} | {r['rss_before_mib']:.1f} | "
                         f"{r['rss_after_mib']:.1f} | {r['kib_per_agent']:.1f} | {r['fds_per_agent']:.2f} | "
                         f"{r['idle_cores']:.3f} | {r['idle_cpu_us_per_agent_s']:.1f} |")
    if act is not None:
        lines += ["", "| agents downloading at once | aggregate MB/s | mean per agent | slowest | fastest | "
                  "slowest / mean (goal ≥ 0.5) | broker CPU, cores | broker CPU s per GiB |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {act['agents']:.0f} | {act['aggregate_mb_s']:.0f} | {act['mean_mb_s']:.1f} | "
                  f"{act['slowest_mb_s']:.1f} | {act['fastest_mb_s']:.1f} | {act['fairness']:.2f} | "
                  f"{act['broker_cores']:.2f} | {act['broker_cpu_s_per_gib']:.2f} |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", default="1000,5000", help="counts of idle agents, comma-separated ('' for none)")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--active", type=int, default=50, help="agents downloading at once (0 for none)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    idles = []
    for count in filter(None, args.idle.split(",")):
        idles.append(idle(int(count), args.idle_seconds))
        print(idles[-1], flush=True)
    act = active(args.active, args.seconds) if args.active else None
    if act is not None:
        print(act, flush=True)
    table = render(idles, act)
    print(table)
    if args.write_docs:
        write_docs(table, "capacity")


if __name__ == "__main__":
    main()
