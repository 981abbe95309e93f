"""Reconnect storm: N agents connected to a broker, the broker killed (-9) and restarted.

    .venv/bin/python bench/storm.py [--agents 500] [--write-docs]

The agents run in one process (bench/idle_agents.py) with the shipped reconnect settings (backoff
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
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BT, PY, ROOT, Procs, free_port, median_cell, repeat, wait_port, write_docs

sys.path.insert(0, str(ROOT))
from batchtunnel.client import BrokerClient

ADMIN = "bench-admin-token-0123456789"


def status_value(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def metrics(client: BrokerClient) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(client.api_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def storm(agents: int) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bt-storm-"))
    procs = Procs(workdir)
    try:
        pki = workdir / "pki"
        subprocess.run([BT, "certs", "init", "--dir", str(pki), "--hostname", "localhost"], check=True,
                       stdout=subprocess.DEVNULL)
        agent_port, api_port = free_port(), free_port()
        argv = [BT, "broker", "--listen", f"127.0.0.1:{agent_port}", "--api-listen", f"127.0.0.1:{api_port}",
                "--cert", str(pki / "broker.pem"), "--key", str(pki / "broker-key.pem"),
                "--database", str(workdir / "broker.sqlite"), "--log-level", "WARNING"]
        env = {"BATCHTUNNEL_ADMIN_TOKEN": ADMIN}
        broker = procs.start("broker-1", argv, env)
        wait_port(api_port)
        client = BrokerClient(f"http://127.0.0.1:{api_port}", ADMIN)
        tokens = [client.create_tunnel(f"storm{i}")["token"] for i in range(agents)]
        (workdir / "tokens").write_text("\n".join(tokens))
        procs.start("agents", [PY, str(ROOT / "bench" / "idle_agents.py"), f"wss://localhost:{agent_port}/agent",
                               str(pki / "ca.pem"), str(workdir / "tokens"), "shipped"])
        wait_for(lambda: metrics(client)["batchtunnel_agents_connected"] == agents, 120, "the agents to connect")

        os.kill(broker.pid, 9)
        broker.wait()
        restart = time.time()
        broker = procs.start("broker-2", argv, env)
        wait_port(api_port)
        peak_fds = 0
        while True:
            peak_fds = max(peak_fds, len(os.listdir(f"/proc/{broker.pid}/fd")))
            m = metrics(client)
            if m["batchtunnel_agents_connected"] == agents:
                break
            if time.time() - restart > 300:
                raise RuntimeError(f"only {m['batchtunnel_agents_connected']:.0f} of {agents} agents came back")
            time.sleep(0.1)
        all_back = time.time() - restart
        delays = sorted(t["agent"]["connected_since"] - restart for t in client.tunnels())
        m = metrics(client)
        peak_rss = status_value(broker.pid, "VmHWM") / 1024

        reset = time.time()
        subprocess.run(["ss", "-K", "-t", "state", "established", "dst", "127.0.0.1", "dport", "=",
                        str(agent_port)], check=True, stdout=subprocess.DEVNULL)
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
            "peak_rss_after_resume_mib": status_value(broker.pid, "VmHWM") / 1024,
            "peak_fds": peak_fds,
            "refused_crowd": m['batchtunnel_refused_total{cause="crowd"}'],
            "refused_blocked": m['batchtunnel_refused_total{cause="blocked"}'],
        }
    finally:
        procs.stop()


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def render(runs: list[dict[str, float]]) -> str:
    def cell(key: str, fmt: str = ".1f") -> str:
        return median_cell(runs, key, fmt)

    return "\n".join([
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{len(runs)} storms of {runs[0]['agents']:.0f} agents, median (min-max). Shipped settings on both sides.",
        "",
        "| all back, s | agent reconnect p50, s | p99, s | max, s | broker peak RSS MiB | broker peak fds "
        "| refused at accept (cap) | refused for failures | links reset at once: all resumed, s "
        "| broker peak RSS after, MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {cell('all_back_s')} | {cell('p50_s')} | {cell('p99_s')} | {cell('max_s')} | {cell('peak_rss_mib', '.0f')} "
        f"| {cell('peak_fds', '.0f')} | {cell('refused_crowd', '.0f')} | {cell('refused_blocked', '.0f')} "
        f"| {cell('all_resumed_s')} | {cell('peak_rss_after_resume_mib', '.0f')} |",
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
