"""A real jupyter_server behind the tunnel: REST, and a kernel's WebSocket executing code."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from pathlib import Path

import aiohttp

from tests.support.processes import BIN, ProcessGroup, free_port, port_open, wait_until
from tests.support.tunnel import BrokerProcess, Pki


def execute_request(code: str, session: str) -> dict[str, object]:
    msg_id = uuid.uuid4().hex
    return {
        "header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type": "execute_request",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }


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
        async with http.post(f"{base}/api/kernels", json={"name": "python3"}) as resp:
            assert resp.status == 201
            kernel_id = (await resp.json())["id"]
        session = uuid.uuid4().hex
        async with http.ws_connect(f"{base}/api/kernels/{kernel_id}/channels?session_id={session}") as ws:
            request = execute_request("1+1", session)
            await ws.send_str(json.dumps(request))
            result = None
            async with asyncio.timeout(60):
                async for message in ws:
                    reply = json.loads(message.data)
                    if reply.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:  # type: ignore[index]
                        continue
                    if reply["msg_type"] == "execute_result":
                        result = reply["content"]["data"]["text/plain"]
                    if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle" and result:
                        break
            assert result == "2"
        async with http.delete(f"{base}/api/kernels/{kernel_id}") as resp:
            assert resp.status == 204
