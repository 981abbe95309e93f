"""Reconnect storm: N agents connected to a broker, the broker killed (-9) and restarted.

    .venv/bin/python -m bench.storm [--agents 500] [--rounds 3] [--write-docs]     (from the repository root)

The agents run in one process (bench.idle_agents) with the shipped reconnect settings (backoff
0.5 s doubling to 30 s, equal jitter). The broker restarts on the same port and SQLite database, with
its shipped limits (256 connections waiting to authenticate at most). Figures: seconds from the
restart until every agent is connected again; each agent's reconnect delay (its connected_since minus
the restart), p50/p99/max; the restarted broker's peak RSS (VmHWM) and peak descriptors; connections
it refused at the accept (the cap) and failed authentications. Then every agent's TCP connection is
reset at the same instant (``ss -K``, root): seconds until all 500 sessions are resumed, and the
broker's peak RSS after that. Results go to docs/benchmarks.md between the storm markers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from batchtunnel.client import BrokerClient

from tests.support.processes import ProcessGroup, reset_connections

from .harness import (
    make_pki,
    repeat,
    restart_broker,
    results_table,
    start_broker,
    start_idle_agents,
    status_kib,
    write_docs,
)


def metrics(client: BrokerClient) -> dict[str, float]:
    with urllib.request.urlopen(client.api_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def storm(agents: int) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bt-storm-"))
    procs = ProcessGroup(workdir)
    try:
        pki = make_pki(workdir / "pki")
        broker = start_broker(procs, pki, "--log-level", "WARNING", name="broker-1",
                              database=str(workdir / "broker.sqlite"))
        client = broker.client
        tokens = [client.create_tunnel(f"storm{i}")["token"] for i in range(agents)]
        start_idle_agents(procs, broker.url, broker.ca, tokens, shipped=True)
        wait_for(lambda: metrics(client)["batchtunnel_agents_connected"] == agents, 120, "the agents to connect")

        broker.proc.kill9()
        restart = time.time()
        broker = restart_broker(procs, broker, "broker-2")
        peak_fds = 0
        while True:
            peak_fds = max(peak_fds, len(os.listdir(f"/proc/{broker.proc.pid}/fd")))
            m = metrics(client)
            if m["batchtunnel_agents_connected"] == agents:
                break
            if time.time() - restart > 300:
                raise RuntimeError(f"only {m['batchtunnel_agents_connected']:.0f} of {agents} agents came back")
            time.sleep(0.1)
        all_back = time.time() - restart
        delays = sorted(t["agent"]["connected_since"] - restart for t in client.tunnels())
        m = metrics(client)
        peak_rss = status_kib(broker.proc.pid, "VmHWM") / 1024

        reset = time.time()
        reset_connections("127.0.0.1", broker.agent_port)
        wait_for(lambda: metrics(client)["batchtunnel_resumes_total"] >= agents, 300, "every session to resume")
        all_resumed = time.time() - reset
        if metrics(client)["batchtunnel_agents_connected"] != agents:
            raise RuntimeError("not every agent is connected after the resumes")
        return {
            "agents": agents,
            "all_back_s": all_back,
            "p50_s": statistics.median(delays),
            "p99_s": delays[int(len(delays) * 0.99) - 1],
            "max_s": delays[-1],
            "peak_rss_mib": peak_rss,
            "all_resumed_s": all_resumed,
            "peak_rss_after_resume_mib": status_kib(broker.proc.pid, "VmHWM") / 1024,
            "peak_fds": peak_fds,
            "refused_crowd": m['batchtunnel_refused_total{cause="crowd"}'],
            "refused_blocked": m['batchtunnel_refused_total{cause="blocked"}'],
        }
    finally:
        procs.stop_all()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def render(runs: list[dict[str, float]]) -> str:
    return results_table(runs, f"storms of {runs[0]['agents']:.0f} agents; shipped settings on both sides", [
        ("all back, s", "all_back_s", ".1f"), ("agent reconnect p50, s", "p50_s", ".1f"),
        ("p99, s", "p99_s", ".1f"), ("max, s", "max_s", ".1f"),
        ("broker peak RSS MiB", "peak_rss_mib", ".0f"), ("broker peak fds", "peak_fds", ".0f"),
        ("refused at accept (cap)", "refused_crowd", ".0f"), ("refused for failures", "refused_blocked", ".0f"),
        ("links reset at once: all resumed, s", "all_resumed_s", ".1f"),
        ("broker peak RSS after, MiB", "peak_rss_after_resume_mib", ".0f"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    runs = repeat(args.rounds, lambda: storm(args.agents), "storm")
    table = render(runs)
    print(table)
    if args.write_docs:
        write_docs(table, "storm")


if __name__ == "__main__":
    main()
