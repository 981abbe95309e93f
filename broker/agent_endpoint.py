"""The endpoint agents dial: authenticate, upgrade to WebSocket, run the tunnel session."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from ..session import TunnelSession
from ..wire import AuthenticationError, Connection, ErrorCode, Settings, Side
from .registry import Registry
from .transport import AiohttpTransport

log = logging.getLogger(__name__)

MAX_MESSAGE = 2 * 1024 * 1024  # the session sends at most 1 MiB per message


class AgentEndpoint:
    """aiohttp handler for ``GET /agent`` (WebSocket upgrade).

    Args:
        registry: tunnels and their credentials.
        settings: wire limits announced to agents.
        handshake_timeout: seconds an agent has to complete the HELLO exchange.
        heartbeat_interval, heartbeat_timeout: see :class:`TunnelSession`.
    """

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        handshake_timeout: float,
        heartbeat_interval: float,
        heartbeat_timeout: float,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.handshake_timeout = handshake_timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.sessions: set[TunnelSession] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote or "?"
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise AuthenticationError("no bearer credential presented")
            tunnel = self.registry.authenticate(token.strip())
        except AuthenticationError as exc:
            log.warning("agent from %s refused: %s", peer, exc)
            return web.json_response({"error": str(exc)}, status=401)

        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, compress=False, autoping=True)
        await ws.prepare(request)
        session = TunnelSession(
            Connection(Side.BROKER, self.settings),
            AiohttpTransport(ws, request),
            name=tunnel.id,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_timeout=self.heartbeat_timeout,
        )
        self.sessions.add(session)
        run = asyncio.ensure_future(session.run())  # owned here: awaited below on every path
        try:
            try:
                await session.wait_started(self.handshake_timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                if not run.done():
                    log.warning("agent from %s for tunnel %s: no HELLO within %.0f s", peer, tunnel.id,
                                self.handshake_timeout)
                    session.close(ErrorCode.PROTOCOL_ERROR, "no HELLO in time")
            else:
                if tunnel.id in self.registry.tunnels:
                    self._attach(tunnel.id, session, peer)
                else:
                    session.close(ErrorCode.TUNNEL_DELETED, "the tunnel was deleted")
            closed = await run
        finally:
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
            self.sessions.discard(session)
            if tunnel.session is session:
                tunnel.session = None
                tunnel.disconnected_since = time.time()
                log.info("tunnel %s: agent from %s disconnected", tunnel.id, peer)
        log.debug("tunnel %s: session ended: %s", tunnel.id, closed)
        return ws

    def _attach(self, tunnel_id: str, session: TunnelSession, peer: str) -> None:
        tunnel = self.registry.tunnels[tunnel_id]
        old = tunnel.session
        tunnel.session = session
        tunnel.agent_address = peer
        tunnel.connected_since = time.time()
        tunnel.disconnected_since = None
        if old is not None:
            log.info("tunnel %s: agent from %s replaces the one from %s", tunnel_id, peer, "previous")
            old.close(ErrorCode.REPLACED, "another agent connected with this tunnel's credential")
        log.info("tunnel %s: agent connected from %s", tunnel_id, peer)

    async def close_all(self) -> None:
        for session in list(self.sessions):
            session.close(ErrorCode.SHUTTING_DOWN, "the broker is shutting down")
        await asyncio.gather(*(s.wait_finished() for s in list(self.sessions)), return_exceptions=True)
