"""A hub-side listening port: each TCP connection to it becomes a stream to the tunnel's agent.

The exposure only listens and counts; what a new connection becomes (a stream, or a refusal) is its
tunnel's decision (``Tunnel.connection_made``), so the two never need each other's type.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Exposure:
    """``host:port`` on the hub side, forwarded to ``rport`` on the agent's node.

    Args:
        tunnel_id: for log lines.
        connect: called for each accepted connection, with ``rport``; returns its protocol.
    """

    def __init__(self, tunnel_id: str, host: str, port: int, rport: int,
                 connect: Callable[[int], asyncio.Protocol]) -> None:
        self.tunnel_id = tunnel_id
        self.host = host
        self.port = port
        self.rport = rport
        self.connections = 0
        self._connect = connect
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        """Bind the port. ``port`` 0 picks a free one.

        Raises:
            OSError: the port cannot be bound (in use, not permitted).
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("tunnel %s exposed on %s:%d -> node port %d", self.tunnel_id, self.host, self.port, self.rport)

    def _protocol(self) -> asyncio.Protocol:
        self.connections += 1
        return self._connect(self.rport)

    async def close(self) -> None:
        if self._server is not None:
            # Not wait_closed(): from Python 3.12 it also waits for every open connection.
            self._server.close()
            self._server = None
            log.info("tunnel %s: %s:%d closed", self.tunnel_id, self.host, self.port)

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "rport": self.rport, "connections": self.connections}
