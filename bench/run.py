"""Side-by-side benchmark on loopback: direct TCP, ssh -L (two ciphers), batchtunnel over TLS.

    .venv/bin/python -m bench.run [--rounds 3] [--quick] [--write-docs]     (from the repository root)

Figures per path: one stream 1 GiB download (MB/s), 16 concurrent streams x 64 MiB (aggregate MB/s),
10,000 round trips of 100 bytes (p50/p99 us), new connections per second (connect, 1 KiB each way,
close); what each costs the tunnel's processes in CPU (seconds per GiB moved, microseconds per round
trip and per connection: steadier than MB/s on a machine shared with neighbours), their peak RSS.
Then: broker RSS per idle connected agent (200 agents), and a stream's throughput beside a stalled one.
Every figure is the median of the rounds, with min and max. Needs openssh-server (bench/run.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from batchtunnel.client import BrokerClient

from tests.support.processes import ProcessGroup, free_port

from .harness import (
    GIB,
    MB,
    MIB,
    ROOT,
    agent_argv,
    download,
    make_pki,
    request,
    start_broker,
    start_idle_agents,
    start_target,
    status_kib,
    wait_agent,
    wait_port,
    write_docs,
)


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


def connections(port: int, count: int, threads: int = 4) -> float:
    """Seconds for ``count`` connections, ``threads`` at a time, each: connect, send 1 KiB (echoed),
    read it back, close. What a browser loading a page's files over fresh connections does."""
    payload = bytes(range(256)) * 4
    errors: list[BaseException] = []

    def some(n: int) -> None:
        try:
            for _ in range(n):
                s = request(port, "echo")
                s.sendall(payload)
                got = 0
                while got < len(payload):
                    chunk = s.recv(len(payload) - got)
                    if not chunk:
                        raise RuntimeError("connection closed before the echo")
                    got += len(chunk)
                s.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=some, args=(count // threads,)) for _ in range(threads)]
    start = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
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
                total += status_kib(p.pid, "VmHWM")
            except OSError:
                pass
        return total / 1024


@dataclass(frozen=True)
class Sshd:
    """An sshd on 127.0.0.1 with throwaway keys, for ssh -L forwards."""

    port: int
    keys: Path
    pid: int


def start_sshd(procs: ProcessGroup, workdir: Path) -> Sshd:
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
    return Sshd(port, keys, sshd.pid)


AES128 = ["-c", "aes128-gcm@openssh.com"]


def ssh_forward(procs: ProcessGroup, sshd: Sshd, host: str, port: int, cipher: list[str],
                prefix: list[str] | None = None, timeout: float = 20) -> tuple[int, int]:
    """``ssh -N -L LOCAL:host:port`` through ``sshd`` (run under ``prefix``, e.g. valgrind); returns the
    local port and the ssh client's pid."""
    local = free_port()
    client = procs.start(f"ssh-{local}", [
        *(prefix or []), "ssh", "-N", "-F", "/dev/null", "-i", str(sshd.keys / "client"), "-p", str(sshd.port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-o", "ExitOnForwardFailure=yes", *cipher, "-L", f"{local}:{host}:{port}", "root@127.0.0.1",
    ])
    wait_port(local, timeout)
    return local, client.pid


def setup_ssh(procs: ProcessGroup, workdir: Path, target: int) -> tuple[list[PathUnderTest], int]:
    sshd = start_sshd(procs, workdir)
    paths = []
    for name, cipher in (("ssh -L (default cipher)", []), ("ssh -L (aes128-gcm)", AES128)):
        local, pid = ssh_forward(procs, sshd, "127.0.0.1", target, cipher)
        paths.append(PathUnderTest(name, local, [pid, sshd.pid]))
    return paths, sshd.pid


def setup_batchtunnel(procs: ProcessGroup, workdir: Path, target: int, loop: str,
                      agent_loop: str = "asyncio", label: str | None = None, launcher: list[str] | None = None,
                      env: dict[str, str] | None = None) -> tuple[PathUnderTest, dict[str, object]]:
    """A broker and an agent on loopback exposing ``target``. ``launcher`` replaces the ``batchtunnel``
    command (bench/ab.py runs other versions or codecs through it), ``env`` is added to both processes'."""
    tag = label or f"{loop}-{agent_loop}"
    slug = "".join(c if c.isalnum() else "-" for c in tag)
    pki = make_pki(workdir / f"pki-{slug}")

    def command(argv: list[str]) -> list[str]:
        return argv if launcher is None else [*launcher, *argv[1:]]

    broker = start_broker(procs, pki, "--event-loop", loop, "--log-level", "WARNING", name=f"broker-{slug}",
                          wrap=command, env=env)
    client = broker.client
    tunnel = client.create_tunnel("bench")
    agent = procs.start(f"agent-{slug}", command(agent_argv(
        pki, broker.agent_port, "--event-loop", agent_loop, "--log-level", "WARNING")),
        env={"BATCHTUNNEL_TOKEN": tunnel["token"], **(env or {})}, cwd=ROOT)
    wait_agent(client, tunnel["id"])
    port = client.expose(tunnel["id"], 0, target)["port"]
    info = {"client": client, "broker_pid": broker.proc.pid, "agent_url": broker.url, "ca": broker.ca}
    if label is None:
        label = "defaults: broker uvloop, agent asyncio" if (loop, agent_loop) == ("uvloop", "asyncio") else \
            f"broker {loop}, agent {agent_loop}"
        label = f"batchtunnel, TLS ({label})"
    return PathUnderTest(label, port, [broker.proc.pid, agent.pid]), info


def idle_agents(procs: ProcessGroup, info: dict[str, object], count: int) -> dict[str, float]:
    client = info["client"]
    assert isinstance(client, BrokerClient)
    broker_pid = int(info["broker_pid"])  # type: ignore[call-overload]
    tokens = [client.create_tunnel(f"idle{i}")["token"] for i in range(count)]
    time.sleep(1)
    before = status_kib(broker_pid, "VmRSS")
    fds_before = psutil.Process(broker_pid).num_fds()
    start_idle_agents(procs, str(info["agent_url"]), str(info["ca"]), tokens)
    deadline = time.monotonic() + 120
    while sum(t["agent"]["connected"] for t in client.tunnels()) < count + 1:
        if time.monotonic() > deadline:
            raise RuntimeError("idle agents did not all connect")
        time.sleep(0.2)
    time.sleep(2)
    after = status_kib(broker_pid, "VmRSS")
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


@dataclass(frozen=True)
class Sizes:
    one: int  # bytes of the single download
    many: int  # bytes of each of the 16 concurrent downloads
    round_trips: int
    connections: int


def measure(path: PathUnderTest, sizes: Sizes) -> dict[str, float]:
    """One round of every test on ``path``, and the CPU its tunnel processes spent on each."""
    cpu = [path.cpu_seconds()]
    one_mb_s = sizes.one / download(path.port, sizes.one) / MB
    cpu.append(path.cpu_seconds())
    many_mb_s = 16 * sizes.many / parallel_download(path.port, 16, sizes.many) / MB
    cpu.append(path.cpu_seconds())
    lat = sorted(round_trips(path.port, sizes.round_trips))
    cpu.append(path.cpu_seconds())
    conn_per_s = sizes.connections / connections(path.port, sizes.connections)
    cpu.append(path.cpu_seconds())
    return {
        "one_mb_s": one_mb_s, "many_mb_s": many_mb_s,
        "rtt_p50_us": lat[len(lat) // 2], "rtt_p99_us": lat[int(len(lat) * 0.99)], "conn_per_s": conn_per_s,
        "cpu_s": cpu[3] - cpu[0],
        "one_cpu_s_per_gib": (cpu[1] - cpu[0]) / (sizes.one / GIB),
        "many_cpu_s_per_gib": (cpu[2] - cpu[1]) / (16 * sizes.many / GIB),
        "rtt_cpu_us": (cpu[3] - cpu[2]) / sizes.round_trips * 1e6,
        "conn_cpu_us": (cpu[4] - cpu[3]) / sizes.connections * 1e6,
    }


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
        procs = ProcessGroup(workdir)
        try:
            _, info = setup_batchtunnel(procs, workdir, free_port(), "uvloop", "asyncio")
            print(json.dumps(idle_agents(procs, info, args.idle_agents)))
        finally:
            procs.stop_all()
        return
    one, many, rtts, conns = (1024 * MIB, 64 * MIB, 10_000, 2000) if not args.quick else \
        (64 * MIB, 8 * MIB, 1000, 200)

    workdir = Path(tempfile.mkdtemp(prefix="bt-bench-"))
    procs = ProcessGroup(workdir)
    try:
        target = start_target(procs)
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
                for key, value in measure(path, Sizes(one, many, rtts, conns)).items():
                    rec.setdefault(key, []).append(value)
                print(f"round {r + 1}: {path.name}: {rec['one_mb_s'][-1]:.0f} MB/s "
                      f"({rec['one_cpu_s_per_gib'][-1]:.2f} CPU s/GiB), {rec['many_mb_s'][-1]:.0f} MB/s x16 "
                      f"({rec['many_cpu_s_per_gib'][-1]:.2f}), p50 {rec['rtt_p50_us'][-1]:.0f} us, "
                      f"{rec['conn_per_s'][-1]:.0f} conn/s", flush=True)
        peak = {p.name: p.peak_rss_mib() for p in paths}
        stall = [stalled_figure(bt_default, one // 2) for _ in range(args.rounds)]
        idle = idle_agents(procs, info, args.idle_agents)
    finally:
        procs.stop_all()

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "sizes": {"one_stream_bytes": one, "per_stream_bytes_x16": many, "round_trips": rtts,
                  "connections": conns},
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
        f"of 100 B; {report['sizes'].get('connections', 0)} connections, 4 at a time, each 1 KiB echoed. "
        f"Second table: CPU (user + system) of the tunnel's processes per unit of each test; RSS: peak (VmHWM).",
        "",
        "| path | 1 stream MB/s | 16 streams MB/s | RTT p50 µs | RTT p99 µs | connections/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, rec in report["paths"].items():
        conn = cell(rec["conn_per_s"]) if "conn_per_s" in rec else "-"
        lines.append(f"| {name} | {cell(rec['one_mb_s'])} | {cell(rec['many_mb_s'])} | {cell(rec['rtt_p50_us'])} | "
                     f"{cell(rec['rtt_p99_us'])} | {conn} |")
    lines += [
        "",
        "| path | CPU s per GiB, 1 stream | CPU s per GiB, 16 streams | CPU µs per round trip | "
        "CPU µs per connection | CPU s per round | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rec in report["paths"].items():
        if name == "direct TCP":
            continue
        lines.append(f"| {name} | {cell(rec['one_cpu_s_per_gib'], '.2f')} | {cell(rec['many_cpu_s_per_gib'], '.2f')} | "
                     f"{cell(rec['rtt_cpu_us'])} | {cell(rec['conn_cpu_us'])} | {cell(rec['cpu_s'], '.1f')} | "
                     f"{rec['peak_rss_mib']:.0f} |")
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


if __name__ == "__main__":
    main()
