"""The message transport a tunnel session runs over (a WebSocket, in practice)."""

from __future__ import annotations

from typing import Protocol


class TransportClosed(Exception):
    """The transport is closed; nothing more can be sent."""


class MessageTransport(Protocol):
    """Binary messages in both directions. Adapters wrap aiohttp and websockets."""

    async def send(self, data: bytes) -> None:
        """Send one binary message; wait while the transport is backed up.

        Raises:
            TransportClosed: the transport closed before or while sending.
        """

    async def receive(self) -> bytes | None:
        """Return the next binary message, or None once the transport is closed."""

    async def close(self, code: int, reason: str) -> None:
        """Close politely (WebSocket close ``code``); bounded in time."""

    def abort(self) -> None:
        """Drop the underlying connection now, without a closing handshake."""
