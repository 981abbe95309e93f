"""What the benchmarks share: processes, the target server, a broker and its agents, the figures' format.

Processes and ports come from the tests' helpers (tests/support/processes.py), and the target is the
tests' stand-in notebook, so the benchmark measures against the server the tests check the tunnel with.
"""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from batchtunnel.client import BrokerClient

from tests.support.processes import Proc, ProcessGroup, free_port, port_open, wait_until
from tests.support.target_server import block

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BT = str(Path(PY).parent / "batchtunnel")
MB = 1_000_000
MIB = 1024 * 1024
GIB = 1024 * MIB
ADMIN_TOKEN = "bench-admin-token-0123456789"
SEED = 1
"""Of the bytes the benchmarks download (``source N SEED``)."""


def wait_port(port: int, timeout: float = 20) -> None:
    wait_until(lambda: port_open(port), timeout, f"port {port} to open")


def start_target(procs: ProcessGroup) -> int:
    """The target server (tests/support/target_server.py) in its own process: it must not take the
    client's GIL. Returns its port."""
    port = free_port()
    procs.start("target", [PY, "-m", "tests.support.target_server", str(port)], cwd=ROOT)
    wait_port(port)
    download(port, 1)  # the server computes block(SEED) on first use: not within the first figure
    return port


def request(port: int, line: str) -> socket.socket:
    """A connection to the target (directly or through a tunnel) that asked for ``line``."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(line.encode() + b"\n")
    return s


def download(port: int, size: int, check: bool = False, seed: int = SEED,
             progress: Callable[[int], None] | None = None) -> float:
    """Seconds to receive ``size`` bytes from ``source``; with ``check``, each compared with what was sent
    (``block(seed)``); ``progress(n)`` after each receive, for callers that count bytes as they come."""
    buf = bytearray(MIB)
    expected = memoryview(block(seed) * 2) if check else None  # a chunk starting anywhere ends within two
    start = time.perf_counter()
    s = request(port, f"source {size} {seed}")
    got = 0
    while n := s.recv_into(buf):
        # buf[:n] copies but compares with memcmp; memoryview against memoryview goes item by item, ~50x slower
        if expected is not None and buf[:n] != expected[got % MIB:got % MIB + n]:
            raise RuntimeError(f"corrupt data at byte {got}")
        got += n
        if progress is not None:
            progress(n)
    s.close()
    if got != size:
        raise RuntimeError(f"received {got} of {size} bytes")
    return time.perf_counter() - start


def make_pki(directory: Path) -> Path:
    """A CA and the broker's certificate for localhost, as ``batchtunnel certs init`` makes them."""
    subprocess.run([BT, "certs", "init", "--dir", str(directory), "--hostname", "localhost"], check=True,
                   stdout=subprocess.DEVNULL)
    return directory


@dataclass
class Broker:
    """A broker ``start_broker`` started, with what the benchmarks ask of it."""

    proc: Proc
    client: BrokerClient
    pki: Path
    agent_port: int
    api_port: int
    argv: list[str]
    env: dict[str, str]

    @property
    def url(self) -> str:
        """Where agents dial it."""
        return f"wss://localhost:{self.agent_port}/agent"

    @property
    def ca(self) -> str:
        return str(self.pki / "ca.pem")


def start_broker(procs: ProcessGroup, pki: Path, *extra: str, name: str = "broker", database: str = ":memory:",
                 wrap: Callable[[list[str]], list[str]] | None = None, env: dict[str, str] | None = None,
                 timeout: float = 20) -> Broker:
    """``batchtunnel broker`` on two free loopback ports with the certificate of ``make_pki(pki)`` and ``extra``,
    once its API answers. ``wrap`` rewrites the command (another version, callgrind); ``env`` is added to
    its environment (ADMIN_TOKEN is always set)."""
    agent_port, api_port = free_port(), free_port()
    argv = [BT, "broker", "--listen", f"127.0.0.1:{agent_port}", "--api-listen", f"127.0.0.1:{api_port}",
            "--cert", str(pki / "broker.pem"), "--key", str(pki / "broker-key.pem"), "--database", database, *extra]
    if wrap is not None:
        argv = wrap(argv)
    full_env = {"BATCHTUNNEL_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
    proc = procs.start(name, argv, env=full_env, cwd=ROOT)
    broker = Broker(proc, BrokerClient(f"http://127.0.0.1:{api_port}", ADMIN_TOKEN), pki, agent_port, api_port,
                    argv, full_env)
    wait_broker(broker, timeout)
    return broker


def restart_broker(procs: ProcessGroup, broker: Broker, name: str, timeout: float = 20) -> Broker:
    """The same command again (same ports and database) as a new process ``name``, once its API answers."""
    restarted = replace(broker, proc=procs.start(name, broker.argv, env=broker.env, cwd=ROOT))
    wait_broker(restarted, timeout)
    return restarted


def wait_broker(broker: Broker, timeout: float) -> None:
    """Until the broker's API port is open; at once, with its log, if it exited (a port taken meanwhile)."""
    broker.proc.wait_ready(lambda: port_open(broker.api_port), timeout, f"the broker's API on port {broker.api_port}")


def agent_argv(pki: Path, port: int, *extra: str) -> list[str]:
    """``batchtunnel agent`` dialling wss://localhost:``port`` (start it with its BATCHTUNNEL_TOKEN)."""
    return [BT, "agent", "--url", f"wss://localhost:{port}/agent", "--cafile", str(pki / "ca.pem"), *extra]


def start_idle_agents(procs: ProcessGroup, url: str, ca: str, tokens: list[str], shipped: bool = False,
                      name: str = "idle-agents") -> Proc:
    """bench/idle_agents.py holding one agent per token (idle unless its tunnel is used); ``name`` tells
    several such processes' logs and token files apart."""
    path = procs.log_dir / f"{name}.tokens"
    path.write_text("\n".join(tokens))
    return procs.start(name, [PY, "-m", "bench.idle_agents", url, ca, str(path),
                              *(["shipped"] if shipped else [])], cwd=ROOT)


def wait_agent(client: BrokerClient, tunnel_id: str, timeout: float = 20) -> None:
    """Until the broker says the tunnel's agent is connected."""
    deadline = time.monotonic() + timeout
    while not client.tunnel(tunnel_id)["agent"]["connected"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent of {tunnel_id} did not connect within {timeout:.0f} s")
        time.sleep(0.05)


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (VmRSS, VmHWM), 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def repeat(rounds: int, measure: Callable[[], dict[str, float]], label: str) -> list[dict[str, float]]:
    """``measure()`` ``rounds`` times, printing each result."""
    runs = []
    for r in range(rounds):
        runs.append(measure())
        print(f"{label} {r + 1}: {runs[-1]}", flush=True)
    return runs


def range_cell(values: list[float], fmt: str) -> str:
    """``median (min-max)`` of ``values``, each formatted with ``fmt``."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def median_cell(runs: list[dict[str, float]], key: str, fmt: str) -> str:
    """``median (min-max)`` of one figure over the runs."""
    return range_cell([r[key] for r in runs], fmt)


def results_table(runs: list[dict[str, float]], what: str, columns: list[tuple[str, str, str]]) -> str:
    """A results table for docs/benchmarks.md: a line saying when, where and ``what``, then one row of
    ``median (min-max)`` cells, one per (header, key, format) in ``columns``."""
    cells = [median_cell(runs, key, fmt) for _, key, fmt in columns]
    return "\n".join([
        run_line(f"{len(runs)} {what}, median (min-max)."),
        "",
        "| " + " | ".join(header for header, _, _ in columns) + " |",
        "|" + "---|" * len(columns),
        "| " + " | ".join(cells) + " |",
    ])


def run_line(what: str) -> str:
    """The line that opens a figure in docs/benchmarks.md: when, where, then ``what``."""
    return (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
            f"{os.cpu_count()} CPUs; {what}")


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
