"""A real jupyter_server behind the tunnel: REST, and a kernel's WebSocket executing code."""

from __future__ import annotations

import secrets
from pathlib import Path

import aiohttp

from tests.support.kernel import run_code
from tests.support.processes import BIN, ProcessGroup, free_port, port_open, wait_until
from tests.support.tunnel import BrokerProcess, Pki


async def test_jupyter_rest_and_kernel_websocket_through_the_tunnel(
    procs: ProcessGroup, pki: Pki, tmp_path: Path
) -> None:
    broker = BrokerProcess(procs, pki, tmp_path)
    token = secrets.token_hex(16)
    jport = free_port()
    procs.start("jupyter", [
        str(BIN / "jupyter"), "server", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={jport}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
    ])
    tunnel = broker.client.create_tunnel("jupyter")
    broker.start_agent(tunnel["token"], tunnel_id=tunnel["id"])
    wait_until(lambda: port_open(jport), 30, "jupyter server to listen")
    port = broker.client.expose(tunnel["id"], 0, jport)["port"]
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {token}"}

    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{base}/api/status") as resp:
            assert resp.status == 200
            assert "started" in await resp.json()
        assert await run_code(http, base, "1+1") == "2"
