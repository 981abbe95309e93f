"""The one-file agent (batchtunnel-agent.pyz) against the pip-installed one, in one run.

The pyz carries websockets without its C speed-up, so the agent masks what it sends (RFC 6455: a
client masks every frame) in pure Python: downloads through the tunnel pay for it. Each round
downloads ``--size-mib`` through one broker with each agent in turn (the pip agent on this Python,
the pyz on this Python, the pyz built with websockets 15 on Debian 11's python3.9), every byte
checked.

    .venv/bin/python -m bench.agent_pyz [--rounds 3] [--size-mib 512] [--write-docs]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from tests.support.processes import ProcessGroup
from tests.support.python39 import build_pyz, python39

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

AGENTS = ("pip", "pyz", "pyz39")


def one_round(size: int, work: Path, pyz: Path, pyz39: Path, interpreter39: str) -> dict[str, float]:
    procs = ProcessGroup(work)
    try:
        pki = make_pki(work / "pki") if not (work / "pki").exists() else work / "pki"
        broker = start_broker(procs, pki)
        client = broker.client
        target = start_target(procs)
        figures = {}
        for name in AGENTS:
            argv = agent_argv(pki, broker.agent_port)
            if name == "pyz":
                argv = ["/usr/bin/python3", str(pyz), *argv[2:]]
            elif name == "pyz39":
                argv = [interpreter39, str(pyz39), *argv[2:]]
            tunnel = client.create_tunnel(name)
            agent = procs.start(f"agent-{name}", argv, env={"BATCHTUNNEL_TOKEN": tunnel["token"]})
            wait_agent(client, tunnel["id"])
            port = client.expose(tunnel["id"], 0, target)["port"]
            figures[name] = size / download(port, size, check=True) / MB
            agent.stop()
            client.delete_tunnel(tunnel["id"])
        return figures
    finally:
        procs.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    interpreter39, websockets39 = python39()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pyz, pyz39 = work / "agent.pyz", work / "agent39.pyz"
        build_pyz(pyz)
        build_pyz(pyz39, "--websockets", websockets39)
        version = subprocess.run(["/usr/bin/python3", "--version"], capture_output=True, text=True).stdout.split()[1]
        runs = repeat(args.rounds, lambda: one_round(args.size_mib * MIB, work, pyz, pyz39, interpreter39), "round")
    table = results_table(runs, f"rounds; one {args.size_mib} MiB download through each agent in turn, every byte "
                                "checked", [
                                    (f"pip-installed agent, Python {version}, MB/s", "pip", ".0f"),
                                    (f"pyz agent, Python {version}, MB/s", "pyz", ".0f"),
                                    ("pyz agent (websockets 15), Python 3.9, MB/s", "pyz39", ".0f"),
                                ])
    print(table)
    if args.write_docs:
        write_docs(table, "agent-pyz")


if __name__ == "__main__":
    main()
