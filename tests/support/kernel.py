"""Run code in a Jupyter kernel through the server's REST API and the kernel's WebSocket."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp


def execute_request(code: str, session: str) -> dict[str, Any]:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "username": "test", "session": session,
                   "msg_type": "execute_request", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }


async def run_code(http: aiohttp.ClientSession, base: str, code: str, timeout: float = 60) -> str:
    """Start a kernel at ``base`` (a server URL), run ``code``, return its text/plain result, delete it."""
    async with http.post(f"{base}/api/kernels", json={"name": "python3"}) as resp:
        assert resp.status == 201, await resp.text()
        kernel = (await resp.json())["id"]
    session = uuid.uuid4().hex
    result = ""
    async with http.ws_connect(f"{base}/api/kernels/{kernel}/channels?session_id={session}") as ws:
        request = execute_request(code, session)
        await ws.send_str(json.dumps(request))
        async with asyncio.timeout(timeout):
            async for message in ws:
                reply = json.loads(message.data)
                if reply.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                    continue
                if reply["msg_type"] == "execute_result":
                    result = reply["content"]["data"]["text/plain"]
                if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle" and result:
                    break
    async with http.delete(f"{base}/api/kernels/{kernel}") as resp:
        assert resp.status == 204
    return result
