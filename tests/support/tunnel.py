"""A running broker (real process, real TLS) and agents, as the tunnel tests use them."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchtunnel.client import BrokerClient

from .processes import BIN, Proc, ProcessGroup, free_port, port_open, wait_until

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


@dataclass
class Pki:
    dir: Path

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.pem")

    @property
    def cert(self) -> str:
        return str(self.dir / "broker.pem")

    @property
    def key(self) -> str:
        return str(self.dir / "broker-key.pem")


def make_pki(directory: Path) -> Pki:
    from batchtunnel.certs import authority as ca

    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = ca.create_ca()
    # 10.213.7.1, 10.213.8.1: the hub side of the test Slurm cluster and Grid Engine cell (scripts/*-cluster.sh)
    cert, key = ca.issue_server(ca_cert, ca_key, ["localhost"], ["127.0.0.1", "10.213.7.1", "10.213.8.1"])
    ca.write_pem(str(directory / "ca.pem"), ca.cert_pem(ca_cert), False, True)
    ca.write_pem(str(directory / "broker.pem"), ca.cert_pem(cert), False, True)
    ca.write_pem(str(directory / "broker-key.pem"), ca.key_pem(key), True, True)
    return Pki(directory)


class BrokerProcess:
    """``batchtunnel broker`` on free loopback ports with TLS and an SQLite file."""

    def __init__(self, procs: ProcessGroup, pki: Pki, workdir: Path, *extra: str,
                 listen_host: str = "127.0.0.1", public_host: str = "localhost", plain: bool = False) -> None:
        self.procs = procs
        self.listen_host = listen_host
        self.public_host = public_host
        self.pki = pki
        self.workdir = workdir
        self.extra = list(extra)
        self.plain = plain  # no TLS of its own (behind a TLS-terminating proxy, or --insecure)
        self.agent_port = free_port()
        self.api_port = free_port()
        self.database = str(workdir / "broker.sqlite")
        self.client = BrokerClient(self.api_url, ADMIN_TOKEN)
        self.proc: Proc | None = None
        self.starts = 0
        self.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def agent_url(self) -> str:
        return f"{'ws' if self.plain else 'wss'}://{self.public_host}:{self.agent_port}/agent"

    def start(self) -> None:
        self.starts += 1
        self.proc = self.procs.start(
            f"broker-{self.starts}",
            [str(BIN / "batchtunnel"), "broker", "--listen", f"{self.listen_host}:{self.agent_port}",
             "--api-listen", f"127.0.0.1:{self.api_port}",
             *([] if self.plain else ["--cert", self.pki.cert, "--key", self.pki.key]),
             "--database", self.database, *self.extra],
            env={"BATCHTUNNEL_ADMIN_TOKEN": ADMIN_TOKEN},
        )
        self.proc.wait_ready(self.healthy, 15, "the broker to answer /health")

    def healthy(self) -> bool:
        with urllib.request.urlopen(self.api_url + "/health", timeout=1) as resp:
            return bool(json.load(resp)["status"] == "ok")

    def tunnel(self, tunnel_id: str) -> dict[str, Any]:
        return self.client.tunnel(tunnel_id)

    def metrics(self) -> dict[str, float]:
        """/metrics as ``{'name{labels}': value}``."""
        with urllib.request.urlopen(self.api_url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    def rss_kib(self) -> int:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))

    def fd_count(self) -> int:
        assert self.proc is not None
        return len(list(Path(f"/proc/{self.proc.pid}/fd").iterdir()))

    def agent_connected(self, tunnel_id: str) -> bool:
        return bool(self.tunnel(tunnel_id)["agent"]["connected"])

    def start_agent(self, token: str, name: str = "agent", *extra: str, wait: bool = True,
                    tunnel_id: str | None = None) -> Proc:
        proc = self.procs.start(
            name,
            [str(BIN / "batchtunnel"), "agent", "--url", self.agent_url, "--cafile", self.pki.ca, *extra],
            env={"BATCHTUNNEL_TOKEN": token},
        )
        if wait:
            assert tunnel_id is not None
            wait_until(lambda: self.agent_connected(tunnel_id), 15, f"{name} to connect")
        return proc


def target_server(procs: ProcessGroup, name: str = "target") -> tuple[Proc, int]:
    """The multi-purpose TCP server standing in for a notebook (tests/support/target_server.py)."""
    port = free_port()
    proc = procs.start(name, [str(BIN / "python"), "-m", "tests.support.target_server", str(port)],
                       cwd=Path(__file__).resolve().parents[2])
    proc.wait_ready(lambda: port_open(port), 10, "the target server to listen")
    return proc, port
