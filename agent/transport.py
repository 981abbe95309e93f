"""The websockets client connection as a session MessageTransport."""

from __future__ import annotations

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ..session import TransportClosed


class WebsocketsTransport:
    """Adapts ``websockets``' ClientConnection; see :class:`batchtunnel.session.MessageTransport`."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def receive(self) -> bytes | None:
        try:
            message = await self._ws.recv()
        except ConnectionClosed:
            return None
        if isinstance(message, str):
            await self.close(1003, "binary messages only")
            return None
        return message

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)

    def abort(self) -> None:
        self._ws.transport.abort()
