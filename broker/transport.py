"""aiohttp's server-side WebSocket as a session MessageTransport."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web

from ..session import TransportClosed


class AiohttpTransport:
    """Adapts ``web.WebSocketResponse``; see :class:`batchtunnel.session.MessageTransport`."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self._ws = ws
        self._request = request

    async def send(self, data: bytes) -> None:
        if self._ws.closed:
            raise TransportClosed("websocket closed")
        try:
            await self._ws.send_bytes(data)
        except (ConnectionError, RuntimeError) as exc:
            raise TransportClosed(str(exc)) from None

    async def receive(self) -> bytes | None:
        msg = await self._ws.receive()
        if msg.type is WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type is WSMsgType.TEXT:
            await self.close(1003, "binary messages only")
        return None

    async def close(self, code: int, reason: str) -> None:
        if self._ws.closed:
            return
        try:
            await asyncio.wait_for(self._ws.close(code=code, message=reason.encode()), 2.0)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            self.abort()

    def abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.abort()
