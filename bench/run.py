"""Side-by-side benchmark on loopback: direct TCP, ssh -L (two ciphers), batchtunnel over TLS.

    .venv/bin/python bench/run.py [--rounds 3] [--quick] [--write-docs]

Figures per path: one stream 1 GiB download (MB/s), 16 concurrent streams x 64 MiB (aggregate MB/s),
10,000 round trips of 100 bytes (p50/p99 us), CPU seconds and peak RSS of the tunnel's processes.
Then: broker RSS per idle connected agent (200 agents), and a stream's throughput beside a stalled one.
Every figure is the median of the rounds, with min and max. Needs openssh-server (bench/run.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BT = str(Path(PY).parent / "batchtunnel")
MB = 1_000_000
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def request(port: int, line: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(line.encode() + b"\n")
    return s


def download(port: int, size: int) -> float:
    """Seconds to receive ``size`` bytes."""
    buf = bytearray(1 << 20)
    start = time.perf_counter()
    s = request(port, f"source {size}")
    got = 0
    while n := s.recv_into(buf):
        got += n
    s.close()
    if got != size:
        raise RuntimeError(f"received {got} of {size} bytes")
    return time.perf_counter() - start


def parallel_download(port: int, streams: int, size: int) -> float:
    errors: list[BaseException] = []

    def one() -> None:
        try:
            download(port, size)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def round_trips(port: int, count: int) -> list[float]:
    s = request(port, "echo")
    payload = b"x" * 100
    buf = bytearray(100)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        s.sendall(payload)
        got = 0
        while got < 100:
            n = s.recv_into(memoryview(buf)[got:])
            if not n:
                raise RuntimeError("echo closed")
            got += n
        times.append((time.perf_counter() - start) * 1e6)
    s.close()
    return times


class Procs:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.items: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                             start_new_session=True)
        self.items.append(p)
        return p

    def stop(self) -> None:
        for p in reversed(self.items):
            try:
                os.killpg(p.pid, 15)
                p.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:
                    pass


@dataclass
class PathUnderTest:
    name: str
    port: int
    pids: list[int] = field(default_factory=list)  # tunnel processes (ssh -L: the ssh client and sshd tree)

    def processes(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for pid in self.pids:
            try:
                p = psutil.Process(pid)
                found.append(p)
                found += p.children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        return found

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def peak_rss_mib(self) -> float:
        total = 0
        for p in self.processes():
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total / MIB


def setup_ssh(procs: Procs, workdir: Path, target: int) -> tuple[list[PathUnderTest], int]:
    keys = workdir / "ssh"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "client")], check=True)
    shutil.copy(keys / "client.pub", keys / "authorized_keys")
    port = free_port()
    (keys / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"AllowTcpForwarding yes\nPidFile {keys / 'sshd.pid'}\nLogLevel ERROR\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    sshd = procs.start("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(keys / "sshd_config")])
    wait_port(port)
    paths = []
    for name, cipher in (("ssh -L (default cipher)", []), ("ssh -L (aes128-gcm)", ["-c", "aes128-gcm@openssh.com"])):
        local = free_port()
        client = procs.start(f"ssh-{local}", [
            "ssh", "-N", "-F", "/dev/null", "-i", str(keys / "client"), "-p", str(port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "ExitOnForwardFailure=yes", *cipher, "-L", f"{local}:127.0.0.1:{target}", "root@127.0.0.1",
        ])
        wait_port(local)
        paths.append(PathUnderTest(name, local, [client.pid, sshd.pid]))
    return paths, sshd.pid


def setup_batchtunnel(procs: Procs, workdir: Path, target: int, loop: str,
                      agent_loop: str = "asyncio") -> tuple[PathUnderTest, dict[str, object]]:
    pki = workdir / f"pki-{loop}-{agent_loop}"
    subprocess.run([BT, "certs", "init", "--dir", str(pki), "--hostname", "localhost"], check=True,
                   stdout=subprocess.DEVNULL)
    agent_port, api_port = free_port(), free_port()
    token = "bench-admin-token-0123456789"
    env = {"BATCHTUNNEL_ADMIN_TOKEN": token}
    broker = procs.start(f"broker-{loop}-{agent_loop}", [
        BT, "broker", "--listen", f"127.0.0.1:{agent_port}", "--api-listen", f"127.0.0.1:{api_port}",
        "--cert", str(pki / "broker.pem"), "--key", str(pki / "broker-key.pem"), "--database", ":memory:",
        "--event-loop", loop, "--log-level", "WARNING"], env)
    wait_port(api_port)
    sys.path.insert(0, str(ROOT))
    from batchtunnel.client import BrokerClient

    client = BrokerClient(f"http://127.0.0.1:{api_port}", token)
    tunnel = client.create_tunnel("bench")
    agent = procs.start(f"agent-{loop}-{agent_loop}", [
        BT, "agent", "--url", f"wss://localhost:{agent_port}/agent", "--cafile", str(pki / "ca.pem"),
        "--event-loop", agent_loop, "--log-level", "WARNING"], {"BATCHTUNNEL_TOKEN": tunnel["token"]})
    wait_agent(client, tunnel["id"])
    port = client.expose(tunnel["id"], 0, target)["port"]
    info = {"client": client, "broker_pid": broker.pid, "agent_url": f"wss://localhost:{agent_port}/agent",
            "ca": str(pki / "ca.pem")}
    name = "defaults: broker uvloop, agent asyncio" if (loop, agent_loop) == ("uvloop", "asyncio") else \
        f"broker {loop}, agent {agent_loop}"
    return PathUnderTest(f"batchtunnel, TLS ({name})", port, [broker.pid, agent.pid]), info


def wait_agent(client: Any, tunnel_id: str, timeout: float = 20) -> None:
    """Until the broker says the tunnel's agent is connected."""
    deadline = time.monotonic() + timeout
    while not client.tunnel(tunnel_id)["agent"]["connected"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent of {tunnel_id} did not connect within {timeout:.0f} s")
        time.sleep(0.05)


def repeat(rounds: int, measure: Callable[[], dict[str, float]], label: str) -> list[dict[str, float]]:
    """``measure()`` ``rounds`` times, printing each result."""
    runs = []
    for r in range(rounds):
        runs.append(measure())
        print(f"{label} {r + 1}: {runs[-1]}", flush=True)
    return runs


def median_cell(runs: list[dict[str, float]], key: str, fmt: str) -> str:
    """``median (min-max)`` of one figure over the runs."""
    values = [r[key] for r in runs]
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle_agents(procs: Procs, workdir: Path, info: dict[str, object], count: int) -> dict[str, float]:
    from batchtunnel.client import BrokerClient

    client = info["client"]
    assert isinstance(client, BrokerClient)
    broker_pid = int(info["broker_pid"])  # type: ignore[call-overload]
    tokens = [client.create_tunnel(f"idle{i}")["token"] for i in range(count)]
    (workdir / "tokens").write_text("\n".join(tokens))
    time.sleep(1)
    before = rss_kib(broker_pid)
    fds_before = psutil.Process(broker_pid).num_fds()
    procs.start("idle-agents", [PY, str(ROOT / "bench" / "idle_agents.py"), str(info["agent_url"]),
                                str(info["ca"]), str(workdir / "tokens")])
    deadline = time.monotonic() + 120
    while sum(t["agent"]["connected"] for t in client.tunnels()) < count + 1:
        if time.monotonic() > deadline:
            raise RuntimeError("idle agents did not all connect")
        time.sleep(0.2)
    time.sleep(2)
    after = rss_kib(broker_pid)
    return {"agents": count, "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
            "kib_per_agent": (after - before) / count,
            "fds_per_agent": (psutil.Process(broker_pid).num_fds() - fds_before) / count}


def stalled_figure(path: PathUnderTest, size: int) -> dict[str, float]:
    solo = size / download(path.port, size) / MB
    stalled = request(path.port, "forever")  # never read
    time.sleep(1)
    beside = size / download(path.port, size) / MB
    stalled.close()
    return {"solo_mb_s": solo, "beside_stalled_mb_s": beside, "ratio": beside / solo}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/benchmarks.md")
    parser.add_argument("--idle-agents", type=int, default=200)
    parser.add_argument("--only-idle", action="store_true", help="measure broker memory per idle agent only")
    args = parser.parse_args()
    if args.only_idle:
        workdir = Path(tempfile.mkdtemp(prefix="bt-bench-"))
        procs = Procs(workdir)
        try:
            _, info = setup_batchtunnel(procs, workdir, free_port(), "uvloop", "asyncio")
            print(json.dumps(idle_agents(procs, workdir, info, args.idle_agents)))
        finally:
            procs.stop()
        return
    one, many, rtts = (1024 * MIB, 64 * MIB, 10_000) if not args.quick else (64 * MIB, 8 * MIB, 1000)

    workdir = Path(tempfile.mkdtemp(prefix="bt-bench-"))
    procs = Procs(workdir)
    try:
        target = free_port()
        procs.start("target", [PY, str(ROOT / "bench" / "target.py"), str(target)])
        wait_port(target)
        paths = [PathUnderTest("direct TCP", target)]
        ssh_paths, _ = setup_ssh(procs, workdir, target)
        paths += ssh_paths
        bt_default, info = setup_batchtunnel(procs, workdir, target, "uvloop", "asyncio")
        bt_asyncio, _ = setup_batchtunnel(procs, workdir, target, "asyncio", "asyncio")
        paths += [bt_default, bt_asyncio]
        results: dict[str, dict[str, list[float]]] = {p.name: {} for p in paths}
        for r in range(args.rounds):
            for path in paths:
                rec = results[path.name]
                cpu0 = path.cpu_seconds()
                rec.setdefault("one_mb_s", []).append(one / download(path.port, one) / MB)
                rec.setdefault("many_mb_s", []).append(16 * many / parallel_download(path.port, 16, many) / MB)
                lat = sorted(round_trips(path.port, rtts))
                rec.setdefault("rtt_p50_us", []).append(lat[len(lat) // 2])
                rec.setdefault("rtt_p99_us", []).append(lat[int(len(lat) * 0.99)])
                rec.setdefault("cpu_s", []).append(path.cpu_seconds() - cpu0)
                print(f"round {r + 1}: {path.name}: {rec['one_mb_s'][-1]:.0f} MB/s, "
                      f"{rec['many_mb_s'][-1]:.0f} MB/s x16, p50 {rec['rtt_p50_us'][-1]:.0f} us", flush=True)
        peak = {p.name: p.peak_rss_mib() for p in paths}
        stall = [stalled_figure(bt_default, one // 2) for _ in range(args.rounds)]
        idle = idle_agents(procs, workdir, info, args.idle_agents)
    finally:
        procs.stop()

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "sizes": {"one_stream_bytes": one, "per_stream_bytes_x16": many, "round_trips": rtts},
        "rounds": args.rounds,
        "paths": {name: {k: summary(v) for k, v in rec.items()} | {"peak_rss_mib": peak[name]}
                  for name, rec in results.items()},
        "stalled": {k: summary([s[k] for s in stall]) for k in stall[0]},
        "idle_agents": idle,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=2))
    table = render(report)
    print(table)
    if args.write_docs:
        write_docs(table)


def render(report: dict) -> str:  # type: ignore[type-arg]
    def cell(s: dict[str, float], fmt: str = ".0f") -> str:
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

    lines = [
        f"Run {report['date']} on {report['machine']}; {report['rounds']} rounds, median (min-max). "
        f"One stream: {report['sizes']['one_stream_bytes'] // MIB} MiB download; 16 streams x "
        f"{report['sizes']['per_stream_bytes_x16'] // MIB} MiB; {report['sizes']['round_trips']} round trips "
        f"of 100 B. CPU: seconds used by the tunnel's processes for one round of all three; RSS: peak (VmHWM).",
        "",
        "| path | 1 stream MB/s | 16 streams MB/s | RTT p50 µs | RTT p99 µs | tunnel CPU s | tunnel peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rec in report["paths"].items():
        cpu = cell(rec["cpu_s"], ".1f") if name != "direct TCP" else "-"
        rss = f"{rec['peak_rss_mib']:.0f}" if name != "direct TCP" else "-"
        lines.append(f"| {name} | {cell(rec['one_mb_s'])} | {cell(rec['many_mb_s'])} | {cell(rec['rtt_p50_us'])} | "
                     f"{cell(rec['rtt_p99_us'])} | {cpu} | {rss} |")
    st, idle = report["stalled"], report["idle_agents"]
    lines += [
        "",
        f"- Beside a stalled stream (its reader never reads), one stream moves {cell(st['beside_stalled_mb_s'])} MB/s "
        f"against {cell(st['solo_mb_s'])} MB/s alone: ratio {cell(st['ratio'], '.2f')} (batchtunnel, defaults).",
        f"- Broker memory with {idle['agents']} idle agents connected: {idle['rss_before_mib']:.1f} MiB before, "
        f"{idle['rss_after_mib']:.1f} MiB after: **{idle['kib_per_agent']:.1f} KiB per agent**, "
        f"{idle['fds_per_agent']:.2f} file descriptors per agent.",
    ]
    return "\n".join(lines)


def write_docs(table: str, section: str = "results") -> None:
    """Replace what docs/benchmarks.md holds between <!-- SECTION:start --> and <!-- SECTION:end -->."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text()
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    if start not in text:
        raise RuntimeError(f"docs/benchmarks.md has no {start} marker")
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    path.write_text(f"{before}{start}\n{table}\n{end}{after}")


if __name__ == "__main__":
    main()
