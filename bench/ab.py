"""A/B: batchtunnel variants side by side, in one run, rounds interleaved, against ssh -L as a yardstick.

    .venv/bin/python -m bench.ab [--rounds 5] [--quick] NAME:SPEC...     (from the repository root)

Each variant is a broker and an agent exposing the same target (tests/support/target_server.py), and
each round runs bench/run.py's tests on every variant in turn: one 1 GiB download, 16 x 64 MiB, 10,000
round trips of 100 B, 2,000 connections; MB/s and round trips, and what each costs the tunnel's
processes in CPU (per GiB, per round trip, per connection), median (min-max) of the rounds. A second
table pairs each variant with the first one round by round (rounds are interleaved, so both saw the
same moment of the machine): the median and range of the ratios first/variant. A range that stays on
one side of 1 is a difference beyond the spread.

SPEC is a comma-separated list of settings, empty for this checkout as it is:

    ref=REV            the code of git revision REV (a worktree in /tmp, imported ahead of this checkout)
    codec=websockets   websockets' framing in place of session/wsframes.py (bench/ws_codec.py)
    broker_loop=L      the broker's --event-loop (uvloop by default, as shipped); agent_loop=L likewise
    env.NAME=VALUE     an environment variable for both processes

Example: ``python -m bench.ab new: old:ref=HEAD~1 ws:codec=websockets``. ``--ssh`` adds ssh -L with
aes128-gcm.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import ProcessGroup

from .harness import MIB, PY, ROOT, range_cell, run_line, start_target
from .run import PathUnderTest, Sizes, measure, setup_batchtunnel, setup_ssh


@dataclass
class Variant:
    name: str
    ref: str | None = None
    codec: str | None = None
    broker_loop: str = "uvloop"
    agent_loop: str = "asyncio"
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, _, spec = text.partition(":")
        variant = cls(name)
        for item in filter(None, spec.split(",")):
            key, _, value = item.partition("=")
            if key.startswith("env."):
                variant.env[key[4:]] = value
            elif key in ("ref", "codec", "broker_loop", "agent_loop"):
                setattr(variant, key, value)
            else:
                raise SystemExit(f"unknown setting {key!r} in {text!r} (ref, codec, broker_loop, agent_loop, env.NAME)")
        if variant.codec not in (None, "websockets"):
            raise SystemExit(f"unknown codec {variant.codec!r}: only 'websockets'")
        return variant


def checkout(ref: str, workdir: Path) -> Path:
    """A directory to put first on PYTHONPATH so that ``import batchtunnel`` gives revision ``ref``."""
    tree = workdir / f"tree-{ref.replace('/', '_')}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), ref], check=True,
                   capture_output=True)
    top = workdir / f"path-{ref.replace('/', '_')}"
    top.mkdir()
    (top / "batchtunnel").symlink_to(tree)  # the repository root is the package (pyproject: package-dir)
    return top


def start(procs: ProcessGroup, workdir: Path, target: int, variant: Variant) -> PathUnderTest:
    env = dict(variant.env)
    launcher = None
    if variant.ref is not None:
        # Ahead of the editable install: the ``batchtunnel`` command then imports that revision.
        env["PYTHONPATH"] = f"{checkout(variant.ref, workdir)}:{ROOT}"
    if variant.codec == "websockets":
        launcher = [PY, "-m", "bench.ws_codec"]
    path, _ = setup_batchtunnel(procs, workdir, target, variant.broker_loop, variant.agent_loop,
                                label=variant.name, launcher=launcher, env=env)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", metavar="NAME:SPEC")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--ssh", action="store_true", help="add ssh -L (aes128-gcm) as a yardstick")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    variants = [Variant.parse(v) for v in args.variants]
    sizes = Sizes(1024 * MIB, 64 * MIB, 10_000, 2000) if not args.quick else Sizes(64 * MIB, 8 * MIB, 1000, 200)
    workdir = Path(tempfile.mkdtemp(prefix="bt-ab-"))
    procs = ProcessGroup(workdir)
    try:
        target = start_target(procs)
        paths = [start(procs, workdir, target, v) for v in variants]
        if args.ssh:
            ssh, _ = setup_ssh(procs, workdir, target)
            paths.append(ssh[1])
        results: dict[str, dict[str, list[float]]] = {p.name: {} for p in paths}
        for r in range(args.rounds):
            for path in paths:
                for key, value in measure(path, sizes).items():
                    results[path.name].setdefault(key, []).append(value)
                rec = results[path.name]
                print(f"round {r + 1}: {path.name}: {rec['one_mb_s'][-1]:.0f} MB/s "
                      f"({rec['one_cpu_s_per_gib'][-1]:.2f} CPU s/GiB), {rec['many_mb_s'][-1]:.0f} x16 "
                      f"({rec['many_cpu_s_per_gib'][-1]:.2f}), p50 {rec['rtt_p50_us'][-1]:.0f} us "
                      f"({rec['rtt_cpu_us'][-1]:.0f} CPU us), {rec['conn_per_s'][-1]:.0f} conn/s", flush=True)
    finally:
        procs.stop_all()
        for tree in workdir.glob("tree-*"):  # the worktrees checkout() added
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print(table(results, args.rounds, variants))  # the ssh -L row, if any, is paired like a variant
    if args.json:
        args.json.write_text(json.dumps({"date": time.time(), "results": results}, indent=2))


COLUMNS = [
    ("1 stream MB/s", "one_mb_s", ".0f"), ("CPU s/GiB, 1 stream", "one_cpu_s_per_gib", ".2f"),
    ("16 streams MB/s", "many_mb_s", ".0f"), ("CPU s/GiB, 16 streams", "many_cpu_s_per_gib", ".2f"),
    ("RTT p50 µs", "rtt_p50_us", ".0f"), ("CPU µs per round trip", "rtt_cpu_us", ".0f"),
    ("connections/s", "conn_per_s", ".0f"), ("CPU µs per connection", "conn_cpu_us", ".0f"),
]


def table(results: dict[str, dict[str, list[float]]], rounds: int, variants: list[Variant]) -> str:
    specs = "; ".join(
        f"{v.name}: " + (", ".join(filter(None, [
            v.ref and f"ref {v.ref}", v.codec and f"codec {v.codec}",
            f"broker {v.broker_loop}, agent {v.agent_loop}",
            *(f"{k}={val}" for k, val in v.env.items())])))
        for v in variants)
    lines = [run_line(f"{rounds} interleaved rounds, median (min-max). {specs}."), "",
             "| variant | " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, rec in results.items():
        lines.append(f"| {name} | " + " | ".join(range_cell(rec[k], f) for _, k, f in COLUMNS) + " |")
    first, *others = results
    if others:
        lines += ["", f"Paired, round by round: {first} / variant, median (min-max) of the ratios.", "",
                  "| variant | " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
        for name in others:
            ratios = [[a / b for a, b in zip(results[first][k], results[name][k], strict=True)] for _, k, _ in COLUMNS]
            lines.append(f"| {first} / {name} | " + " | ".join(range_cell(r, ".2f") for r in ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
