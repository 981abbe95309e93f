"""User-space instructions per GiB moved and per round trip, counted by valgrind's callgrind.

    .venv/bin/python -m bench.instructions [--mib 32] [--round-trips 1000] [--write-docs]

CPU seconds move with the neighbours' load; an instruction count does not. The broker, the agent and
the ssh client of ``ssh -L`` run under ``valgrind --tool=callgrind``; for each measurement their
counters are zeroed (``callgrind_control -z``), the test runs (one download of ``--mib`` MiB, then
``--round-trips`` round trips of 100 B), and the counters are dumped (``callgrind_control -d``).

sshd cannot run under valgrind: its pre-authentication sandbox lowers its own descriptor limit to 0,
which valgrind refuses (EPERM), and the connection dies. So ssh -L is counted on its client side only,
against each of our two processes: the broker is the hub-side end, as the ssh client is; the agent
does on the node what sshd does there.

What this does not count: the kernel (system calls, TCP on loopback, copies to and from sockets: about
half the CPU of every path in ``perf`` profiles on this machine), and what valgrind's virtual CPU lacks:
it offers no AVX-512, so OpenSSL and glibc take their AVX2 code, the same for every path.
Needs valgrind and openssh-server (bench/run.sh installs the latter; apt install valgrind).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.processes import ProcessGroup, wait_until

from .harness import (
    GIB,
    MIB,
    PY,
    ROOT,
    agent_argv,
    download,
    make_pki,
    run_line,
    start_broker,
    start_target,
    wait_agent,
    write_docs,
)
from .run import AES128, round_trips, ssh_forward, start_sshd


def callgrind(outdir: Path, name: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--trace-children=yes", "--quiet",
            f"--callgrind-out-file={outdir}/{name}.%p"]


def control(flag: str, pids: list[int]) -> None:
    for pid in pids:
        subprocess.run(["callgrind_control", flag, str(pid)], check=False, capture_output=True, timeout=120)


def dumped(outdir: Path, pids: list[int]) -> int:
    """Instructions in each process's latest dump, summed."""
    total = 0
    for pid in pids:
        dumps = sorted(outdir.glob(f"*.{pid}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        if dumps:
            match = re.search(r"^totals: (\d+)", dumps[-1].read_text(), re.M)
            total += int(match.group(1)) if match else 0
    return total


def count(outdir: Path, pids: list[int], work: Callable[[], object]) -> int:
    control("-z", pids)
    work()
    control("-d", pids)
    return dumped(outdir, pids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--round-trips", type=int, default=1000)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt install valgrind)")
    size = args.mib * MIB
    workdir = Path(tempfile.mkdtemp(prefix="bt-instr-"))
    out = workdir / "callgrind"
    out.mkdir()
    procs = ProcessGroup(workdir)
    results: dict[str, dict[str, float]] = {}
    try:
        target = start_target(procs)
        paths: list[tuple[str, int, list[int]]] = []
        # ssh -L, both ciphers, the ssh client under callgrind (sshd cannot be: see above)
        sshd = start_sshd(procs, workdir)
        for name, cipher in (("ssh -L (default cipher)", []), ("ssh -L (aes128-gcm)", AES128)):
            local, pid = ssh_forward(procs, sshd, "127.0.0.1", target, cipher, callgrind(out, "ssh"), timeout=180)
            download(local, 1)  # the forwarding child exists
            paths.append((f"{name}: ssh", local, [pid]))
        # batchtunnel, shipped defaults
        pki = make_pki(workdir / "pki")
        broker = start_broker(procs, pki, "--log-level", "WARNING", timeout=300,
                              wrap=lambda argv: [*callgrind(out, "broker"), PY, *argv])  # PY runs the script
        client = broker.client
        tunnel = client.create_tunnel("instructions")
        agent = procs.start("agent", [*callgrind(out, "agent"), PY, *agent_argv(pki, broker.agent_port, "--log-level",
                            "WARNING")], env={"BATCHTUNNEL_TOKEN": tunnel["token"]}, cwd=ROOT)
        wait_agent(client, tunnel["id"], timeout=300)
        port = client.expose(tunnel["id"], 0, target)["port"]
        wait_until(lambda: download(port, 1) is not None, 60, "the tunnel to carry a first byte")
        paths += [("batchtunnel, TLS (defaults): broker", port, [broker.proc.pid]),
                  ("batchtunnel, TLS (defaults): agent", port, [agent.pid])]
        for name, port, pids in paths:
            download(port, MIB)  # windows grown, buffers allocated: the steady state is what is counted
            t0 = time.monotonic()
            per_gib = count(out, pids, lambda port=port: download(port, size)) * GIB / size
            per_rt = count(out, pids, lambda port=port: round_trips(port, args.round_trips)) / args.round_trips
            results[name] = {"instructions_per_gib": per_gib, "instructions_per_round_trip": per_rt}
            print(f"{name}: {per_gib / 1e9:.2f} G instructions per GiB, {per_rt / 1e3:.0f} k per round trip "
                  f"({time.monotonic() - t0:.0f} s under callgrind)", flush=True)
    finally:
        procs.stop_all()
    table = render(results, args.mib, args.round_trips)
    print(table)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "instructions.json").write_text(json.dumps(results, indent=2))
    if args.write_docs:
        write_docs(table, "instructions")


def render(results: dict[str, dict[str, float]], mib: int, rts: int) -> str:
    lines = [run_line(f"callgrind, user space only; one {mib} MiB download and {rts} round trips of 100 B "
                      f"through each path, counted in one process of it."), "",
             "| path: process | instructions per GiB (G) | instructions per round trip (k) |", "|---|---|---|"]
    for name, r in results.items():
        per_gib, per_rt = r["instructions_per_gib"] / 1e9, r["instructions_per_round_trip"] / 1e3
        lines.append(f"| {name} | {per_gib:.2f} | {per_rt:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
