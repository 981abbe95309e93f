"""Run code in a Jupyter kernel through the server's REST API and the kernel's WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
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


class Kernel:
    """One kernel and one open WebSocket to it; ``execute`` may be called many times on that socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: str) -> None:
        self.ws = ws
        self.session = session

    async def execute(self, code: str, timeout: float = 60) -> str:
        """Run ``code``; return its text/plain result once the request is complete: its
        ``execute_reply`` (shell channel) and its ``idle`` status (iopub) both arrived, in
        whichever order, so that no message of this request is left for the caller to read."""
        request = execute_request(code, self.session)
        await self.ws.send_str(json.dumps(request))
        result = ""
        replied = idle = False
        async with asyncio.timeout(timeout):
            async for message in self.ws:
                reply = json.loads(message.data)
                if reply.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                    continue
                if reply["msg_type"] == "execute_result":
                    result = reply["content"]["data"]["text/plain"]
                replied = replied or reply["msg_type"] == "execute_reply"
                idle = idle or (reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle")
                if replied and idle:
                    break
        return result


@contextlib.asynccontextmanager
async def kernel(http: aiohttp.ClientSession, base: str, delete: bool = True) -> AsyncIterator[Kernel]:
    """Start a kernel at ``base`` (a server URL), open its WebSocket; delete the kernel at the end
    (unless ``delete`` is False: the server may be out of reach by then)."""
    async with http.post(f"{base}/api/kernels", json={"name": "python3"}) as resp:
        assert resp.status == 201, await resp.text()
        kernel_id = (await resp.json())["id"]
    session = uuid.uuid4().hex
    try:
        async with http.ws_connect(f"{base}/api/kernels/{kernel_id}/channels?session_id={session}") as ws:
            yield Kernel(ws, session)
    finally:
        if delete:
            async with http.delete(f"{base}/api/kernels/{kernel_id}") as resp:
                assert resp.status == 204


async def run_code(http: aiohttp.ClientSession, base: str, code: str, timeout: float = 60) -> str:
    """Start a kernel at ``base``, run ``code``, return its text/plain result, delete the kernel."""
    async with kernel(http, base) as k:
        return await k.execute(code, timeout)
