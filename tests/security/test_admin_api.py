"""The admin API is reachable by every local user: it must not hand them the broker's descriptors, and a
unix socket can keep them out altogether."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path

from batchtunnel.client import BrokerClient

from tests.support.processes import BIN, ProcessGroup, eventually, free_port, wait_until
from tests.support.tunnel import ADMIN_TOKEN, Pki

from .conftest import API_MAX_CONNECTIONS, API_TIMEOUT, Arena, back_to_baseline, healthy_traffic
from .hostile import HostileAgent


async def test_half_sent_api_requests_cannot_take_the_brokers_descriptors(arena: Arena) -> None:
    """~20,000 half-sent requests took the broker to its descriptor limit. Now: at most
    --api-max-connections are held, each at most --api-timeout, while agents and transfers go on."""
    port = int(arena.broker.api_url.rsplit(":", 1)[1])
    fds_before = arena.broker.fd_count()
    held: list[asyncio.StreamWriter] = []
    try:
        async with healthy_traffic(arena):
            for _ in range(2000):
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    continue
                held.append(writer)
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
            assert arena.broker.fd_count() <= fds_before + API_MAX_CONNECTIONS + 8
            agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca)  # agents still get in
            assert await agent.alive()
            await agent.close()
            # The held ones are closed once they are API_TIMEOUT old (the API, full until then, answers
            # again: the metrics below come through it).
            await eventually(lambda: arena.broker.fd_count() <= fds_before + 2, API_TIMEOUT + 5,
                             "the slow API connections to be closed")
    finally:
        for writer in held:
            writer.close()
    closed = arena.broker.metrics()
    assert closed['batchtunnel_api_connections_closed_total{cause="crowd"}'] > 1000
    assert closed['batchtunnel_api_connections_closed_total{cause="timeout"}'] >= API_MAX_CONNECTIONS / 2
    await back_to_baseline(arena)


def test_a_unix_socket_api_admits_only_who_the_file_mode_admits(procs: ProcessGroup, pki: Pki,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    tmp_path.chmod(0o755)
    procs.start("broker", [str(BIN / "batchtunnel"), "broker", "--listen", f"127.0.0.1:{free_port()}",
                           "--cert", pki.cert, "--key", pki.key, "--api-listen", f"unix:{path}",
                           "--database", ":memory:"], env={"BATCHTUNNEL_ADMIN_TOKEN": ADMIN_TOKEN})
    client = BrokerClient(f"unix:{path}", ADMIN_TOKEN)
    wait_until(lambda: client.request("GET", "/health")["status"] == "ok", 15, "the API on its unix socket")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert client.create_tunnel("over-unix")["id"] in {t["id"] for t in client.tunnels()}
    # Another local user cannot even connect.
    probe = ("import socket; s = socket.socket(socket.AF_UNIX)\n"
             f"try:\n    s.connect({str(path)!r}); print('connected')\nexcept PermissionError: print('refused')\n")
    other = subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, text=True, timeout=30,
                           user="nobody", check=True)
    assert other.stdout.strip() == "refused"
    # batchtunnel's own client reaches it the same way (what `connect --api-url unix:...` does).
    listed = subprocess.run([str(BIN / "batchtunnel"), "tunnels", "list", "--api-url", f"unix:{path}"],
                            env={**os.environ, "BATCHTUNNEL_ADMIN_TOKEN": ADMIN_TOKEN}, capture_output=True,
                            text=True, timeout=30, check=True)
    assert "over-unix" in listed.stdout
