"""A hub-side listening port: each TCP connection to it becomes a stream to the tunnel's agent."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..session import RefusingProtocol, StreamBridge
from ..wire import describe_code

if TYPE_CHECKING:
    from .registry import Tunnel

log = logging.getLogger(__name__)


class Exposure:
    """``host:port`` on the hub side, forwarded to ``rport`` on the agent's node."""

    def __init__(self, tunnel: Tunnel, host: str, port: int, rport: int) -> None:
        self.tunnel = tunnel
        self.host = host
        self.port = port
        self.rport = rport
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        """Bind the port. ``port`` 0 picks a free one.

        Raises:
            OSError: the port cannot be bound (in use, not permitted).
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("tunnel %s exposed on %s:%d -> node port %d", self.tunnel.id, self.host, self.port, self.rport)

    def _protocol(self) -> asyncio.Protocol:
        session = self.tunnel.session
        self.connections += 1
        self.tunnel.connections_total += 1
        if session is None or not session.started or session.closed is not None:
            log.info("tunnel %s: connection to %s:%d refused: no agent connected",
                     self.tunnel.id, self.host, self.port)
            return RefusingProtocol()
        refusal = self.tunnel.refusal(session, time.time())  # checked for every stream
        if refusal is not None:
            log.warning("tunnel %s: connection to %s:%d refused: %s", self.tunnel.id, self.host, self.port,
                        describe_code(refusal))
            session.close(refusal, "this session no longer holds the tunnel")
            return RefusingProtocol()
        return StreamBridge(session, None, self.rport)

    async def close(self) -> None:
        if self._server is not None:
            # Not wait_closed(): from Python 3.12 it also waits for every open connection.
            self._server.close()
            self._server = None
            log.info("tunnel %s: %s:%d closed", self.tunnel.id, self.host, self.port)

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "rport": self.rport, "connections": self.connections}
