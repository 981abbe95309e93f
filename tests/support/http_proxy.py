"""Debian's tinyproxy, as a site's HTTP proxy in front of its compute nodes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .processes import Proc, ProcessGroup, free_port, port_open, wait_until

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"


class HttpProxy:
    """tinyproxy on ``listen``:free port, allowing CONNECT to ``connect_ports`` only, with Basic
    authentication if ``user`` is given. ``restart()`` kills it (every tunnel through it drops) and
    starts it again on the same port."""

    def __init__(self, procs: ProcessGroup, workdir: Path, connect_ports: list[int], listen: str = "127.0.0.1",
                 allow: str = "127.0.0.1", user: str = "", password: str = "") -> None:
        self.procs = procs
        self.host = listen
        self.port = free_port()
        self.user, self.password = user, password
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "tinyproxy.conf"
        lines = ["User nobody", "Group nogroup", f"Port {self.port}", f"Listen {listen}", "Timeout 600",
                 "LogLevel Connect", "MaxClients 200", f"Allow {allow}"]
        lines += [f"ConnectPort {port}" for port in connect_ports]
        if user:
            lines.append(f"BasicAuth {user} {password}")
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: Proc | None = None
        self.starts = 0
        self.start()

    def url(self, credentials: bool = True) -> str:
        auth = f"{self.user}:{self.password}@" if credentials and self.user else ""
        return f"http://{auth}{self.host}:{self.port}"

    def start(self) -> None:
        self.starts += 1
        self.proc = self.procs.start(f"tinyproxy-{self.starts}", [TINYPROXY, "-d", "-c", str(self.config)])
        self.proc.wait_ready(lambda: port_open(self.port, self.host), 10, "tinyproxy to listen")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.stop()
        wait_until(lambda: not port_open(self.port, self.host), 10, "tinyproxy to stop listening")

    def restart(self) -> None:
        self.stop()
        self.start()

    def connects(self, port: int) -> int:
        """CONNECT requests it received for ``port``, over every start."""
        text = "".join(p.log() for p in self.procs.procs if p.name.startswith("tinyproxy-"))
        return len(re.findall(rf"Request \(file descriptor \d+\): CONNECT \S+:{port} ", text))
