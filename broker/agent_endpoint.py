"""The endpoint agents dial: authenticate the WebSocket upgrade, then run the tunnel session."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from websockets.http11 import Request

from ..session import (
    CHECK_HEADER,
    SESSION_HEADER,
    Refusal,
    StreamBridge,
    TaskOwner,
    TunnelSession,
    WebSocketLink,
    serve_local,
)
from ..wire import SERVICE_HUB_API, AuthenticationError, Connection, ErrorCode, Settings, Side, describe_code
from .admission import Admission
from .memory import Trimmer
from .registry import Registry, Tunnel

log = logging.getLogger(__name__)

AGENT_PATH = "/agent"


class AgentEndpoint:
    """Accepts agents on ``wss://HOST:PORT/agent``; one TunnelSession per accepted agent.

    Args:
        registry: tunnels and their credentials.
        settings: wire limits announced to agents.
        handshake_timeout: seconds for the WebSocket upgrade, and again for the HELLO exchange.
        heartbeat_interval, heartbeat_timeout: see :class:`TunnelSession`.
        hub_api: where streams the agent opens for the hub-API service go (single-outbound-port
            mode); None refuses every agent-opened stream.
        admission: the unauthenticated-connection cap and the per-address authentication back-off.
        trusted_proxies: addresses of TLS-terminating reverse proxies in front of the endpoint; for a
            connection from one of them, the agent's address is the last X-Forwarded-For entry.
        resume_grace: seconds a session whose agent link was lost keeps its streams for the agent to
            come back and resume it; 0 ends sessions with their link.
    """

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        handshake_timeout: float,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        hub_api: tuple[str, int] | None = None,
        admission: Admission | None = None,
        trusted_proxies: frozenset[str] = frozenset(),
        resume_grace: float = 0.0,
    ) -> None:
        self.resume_grace = resume_grace
        self.resumes_total = 0
        self.registry = registry
        self.admission = admission or Admission()
        self.trusted_proxies = trusted_proxies
        self.trimmer = Trimmer()
        self.hub_api = hub_api
        self.settings = settings
        self.handshake_timeout = handshake_timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.sessions: set[TunnelSession] = set()
        # Totals of sessions that ended, so that the metrics' byte counters never go down.
        self.ended_bytes_in = self.ended_bytes_out = 0
        # Seconds from an agent's connection accepted to its session attached; from its link lost to
        # its session resumed (metrics.py's histograms).
        self.on_handshake: Callable[[float], None] = lambda seconds: None
        self.on_resume: Callable[[float], None] = lambda seconds: None
        self._tasks = TaskOwner("agent endpoint")

    def activity(self) -> int:
        """A count that grows with every byte the sessions carry and every connection admitted."""
        return sum(s.bytes_in + s.bytes_out for s in self.sessions) + self.admission.admitted_total

    def new_link(self, on_handshake_end: Callable[[], None]) -> WebSocketLink:
        """The WebSocket side of one accepted connection (see ``acceptor.AgentListener``)."""
        return WebSocketLink.server(self._on_request, self.handshake_timeout, on_handshake_end)

    # -- the upgrade request

    def client_address(self, link: WebSocketLink, request: Request) -> str:
        """The agent's address: the TCP peer, or what a trusted reverse proxy says it forwarded (then
        ``link.peer`` names both, for the logs)."""
        if link.peer_host in self.trusted_proxies:
            forwarded = ",".join(request.headers.get_all("X-Forwarded-For"))  # the last one counts
            last = forwarded.rsplit(",", 1)[-1].strip()
            if last:
                link.peer = f"{last} (via {link.peer})"
                return last
        return link.peer_host

    def _on_request(self, link: WebSocketLink, request: Request) -> Refusal | None:
        """Decide on an upgrade request: None accepts it, a Refusal answers it."""
        if request.path.split("?", 1)[0] != AGENT_PATH:
            return Refusal(404, f"agents connect to {AGENT_PATH}\n")
        address = self.client_address(link, request)
        now = time.monotonic()
        wait = self.admission.blocked_for(address, now)
        if wait > 0:
            log.debug("agent from %s refused: blocked after failed authentications (%.0f s left)", link.peer, wait)
            return Refusal(429, "too many failed authentications from this address; retry later\n",
                           (("Retry-After", str(math.ceil(wait))),))
        authorization, wanted = (request.headers.get_all(name) for name in ("Authorization", SESSION_HEADER))
        if len(authorization) > 1 or len(wanted) > 1:
            # Which one would count is ambiguous (and proxies may disagree): refuse, as a failure.
            return self._failed(link, address, now, 400, "an Authorization or session header given twice")
        scheme, _, token = (authorization or [""])[0].partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise AuthenticationError("no bearer credential presented")
            tunnel = self.registry.authenticate(token.strip())
        except AuthenticationError as exc:
            return self._failed(link, address, now, 401, str(exc))
        if request.headers.get(CHECK_HEADER):  # `batchtunnel agent --check`: the credential only, no session
            log.info("tunnel %s: credential checked by an agent from %s (--check)", tunnel.id, link.peer)
            state = "its agent is connected" if tunnel.agent_connected else "no agent connected"
            return Refusal(200, f"the broker accepts the token of tunnel {tunnel.id} ({state})\n")
        wanted_id = (wanted or [""])[0]
        current = tunnel.session
        if wanted_id and current is not None:
            if current.session_id == wanted_id and current.resumable:
                self._resume(tunnel, current, link)
                return None
            log.info("tunnel %s: agent from %s asks to resume a session this broker no longer holds; "
                     "it starts a new one", tunnel.id, link.peer)
        session = TunnelSession(
            Connection(Side.BROKER, self.settings), link, name=tunnel.id, accept=self._accept_service,
            on_started=lambda: self._started(tunnel, session, link.peer),
            heartbeat_interval=self.heartbeat_interval, heartbeat_timeout=self.heartbeat_timeout,
            resume_grace=self.resume_grace,
        )
        link.accept_headers.append((SESSION_HEADER, session.session_id))
        self._tasks.spawn(self._serve(tunnel, session, link.peer), f"tunnel {tunnel.id}")
        return None

    def _failed(self, link: WebSocketLink, address: str, now: float, status: int, why: str) -> Refusal:
        """A failed authentication: counted against the address (admission.py), logged in one line."""
        block = self.admission.failed(address, now)
        if block:
            log.warning("agent from %s refused: %s; %s is refused for %.0f s after repeated failures",
                        link.peer, why, address, block)
        else:
            log.warning("agent from %s refused: %s", link.peer, why)
        return Refusal(status, f"{why}\n")

    def _resume(self, tunnel: Tunnel, session: TunnelSession, link: WebSocketLink) -> None:
        """The agent came back for its session: carry it on over the new link (its old one, if this
        broker had not noticed it die yet, is dropped)."""
        state = "suspended" if session.suspended else "whose old link is presumed dead"
        lost_since = session.suspended_since
        log.info("tunnel %s: agent from %s resumes its session (%s, %d streams)", tunnel.id, link.peer, state,
                 session.stream_count)
        link.accept_headers.append((SESSION_HEADER, session.session_id))
        session.attach(link)
        tunnel.agent_address = link.peer
        tunnel.connected_since = time.time()
        self.resumes_total += 1
        if lost_since is not None:
            self.on_resume(max(0.0, time.time() - lost_since))
        self.trimmer.soon()

    async def _serve(self, tunnel: Tunnel, session: TunnelSession, peer: str) -> None:
        """Run one agent's session (one task per agent: the heartbeat and HELLO deadline are timers)."""
        self.sessions.add(session)
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(self.handshake_timeout, self._hello_overdue, tunnel, session, peer)
        expiry = None
        if tunnel.expires is not None:
            expiry = loop.call_later(max(0.0, tunnel.expires - time.time()), self._expired, tunnel, session)
        try:
            closed = await session.run()
            log.debug("tunnel %s: session from %s ended: %s", tunnel.id, peer, closed)
        finally:
            deadline.cancel()
            if expiry is not None:
                expiry.cancel()
            self.sessions.discard(session)
            self.ended_bytes_in += session.bytes_in
            self.ended_bytes_out += session.bytes_out
            if tunnel.session is session:
                tunnel.session = None
                tunnel.disconnected_since = time.time()
                log.info("tunnel %s: agent from %s disconnected", tunnel.id, peer)
            self.trimmer.soon()

    async def _accept_service(self, session: TunnelSession, bridge: StreamBridge) -> None:
        """A stream the agent opened: only the hub-API service, only where --hub-api says, and only
        while this session still holds its tunnel (checked for every stream)."""
        assert bridge.stream_id is not None
        tunnel = self.registry.tunnels.get(session.name)
        refusal = ErrorCode.TUNNEL_DELETED if tunnel is None else tunnel.refusal(session, time.time())
        if refusal is not None:
            log.warning("tunnel %s: stream from the agent refused: %s", session.name, describe_code(refusal))
            session.reset(bridge.stream_id, ErrorCode.REFUSED_STREAM)
            session.close(refusal, "this session no longer holds the tunnel")
            return
        if bridge.port != SERVICE_HUB_API or self.hub_api is None:
            log.warning("tunnel %s: agent opened a stream to service %d: refused (%s)", session.name,
                        bridge.port, "unknown service" if self.hub_api else "no --hub-api configured")
            session.reset(bridge.stream_id, ErrorCode.REFUSED_STREAM)
            return
        await serve_local(session, bridge, self.hub_api[0], self.handshake_timeout, port=self.hub_api[1])

    def _hello_overdue(self, tunnel: Tunnel, session: TunnelSession, peer: str) -> None:
        if not session.started and session.closed is None:
            log.warning("agent from %s for tunnel %s: no HELLO within %.0f s", peer, tunnel.id,
                        self.handshake_timeout)
            session.close(ErrorCode.PROTOCOL_ERROR, "no HELLO in time")

    def _expired(self, tunnel: Tunnel, session: TunnelSession) -> None:
        log.warning("tunnel %s: credential expired; agent disconnected", tunnel.id)
        session.close(ErrorCode.CREDENTIAL_EXPIRED, "the tunnel's credential expired")

    def _started(self, tunnel: Tunnel, session: TunnelSession, peer: str) -> None:
        if tunnel.id in self.registry.tunnels:
            self._attach(tunnel, session, peer)
        else:
            session.close(ErrorCode.TUNNEL_DELETED, "the tunnel was deleted")

    def _attach(self, tunnel: Tunnel, session: TunnelSession, peer: str) -> None:
        old = tunnel.session
        tunnel.session = session
        tunnel.agent_address = peer
        tunnel.connected_since = time.time()
        tunnel.disconnected_since = None
        if old is not None:
            log.info("tunnel %s: agent from %s replaces the one from %s", tunnel.id, peer, old.link.peer)
            old.close(ErrorCode.REPLACED, "another agent connected with this tunnel's credential")
        log.info("tunnel %s: agent connected from %s", tunnel.id, peer)
        self.on_handshake(time.monotonic() - session.link.created)
        self.trimmer.soon()  # the handshakes' garbage (see broker/memory.py)

    async def close_all(self) -> None:
        for session in list(self.sessions):
            session.close(ErrorCode.SHUTTING_DOWN, "the broker is shutting down")
        await asyncio.gather(*(s.wait_finished() for s in list(self.sessions)), return_exceptions=True)
        await self._tasks.aclose()
        self.trimmer.cancel()
