"""The agent's connection loop: dial out to the broker, serve the session, reconnect forever."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

from .. import __version__
from ..certs.fingerprint import format_fingerprint, parse_fingerprint
from ..session import (
    SESSION_HEADER,
    RefusingProtocol,
    StreamBridge,
    TunnelSession,
    WebSocketLink,
    serve_local,
)
from ..wire import (
    SERVICE_HUB_API,
    Connection,
    ConnectionClosed,
    ErrorCode,
    HandshakeRejected,
    PeerRejected,
    ProxyRefused,
    Side,
)
from .config import LOOPBACK, AgentConfig
from .proxy import Proxy, choose_proxy
from .proxy_connect import open_through

log = logging.getLogger(__name__)


def backoff_delays(initial: float, maximum: float, rng: random.Random) -> Iterator[float]:
    """Exponential backoff with "equal jitter": the n-th delay is uniform in [c/2, c],
    c = min(maximum, initial * 2**n). Spreads a crowd of agents without ever retrying at once."""
    ceiling = initial
    while True:
        yield rng.uniform(ceiling / 2, ceiling)
        ceiling = min(maximum, ceiling * 2)


class Agent:
    """Dials the broker and serves streams until ``stop()``."""

    def __init__(self, config: AgentConfig) -> None:
        config.check()
        self.config = config
        self.session: TunnelSession | None = None  # the current session; while redialling, maybe suspended
        self._session_run: asyncio.Future[ConnectionClosed] | None = None  # its run(), owned here
        self.connected = asyncio.Event()
        self._stopping = False
        self._hub_api_server: asyncio.AbstractServer | None = None
        self._pins = {parse_fingerprint(text) for text in config.fingerprints}
        self._retry_after = 0.0  # what the broker last asked for with Retry-After
        self.proxy: Proxy | None = choose_proxy(config.url, config.proxy, config.environ)  # raises on a bad one

    async def listen_hub_api(self, sock: socket.socket | None = None) -> int:
        """Single-outbound-port mode: accept on ``sock`` (command.hub_api_listener), or else on a free
        127.0.0.1 port; each connection goes to the hub's API as a stream through the broker. Returns
        the port."""
        loop = asyncio.get_running_loop()
        if sock is None:
            self._hub_api_server = await loop.create_server(self._hub_api_protocol, LOOPBACK, 0)
        else:
            self._hub_api_server = await loop.create_server(self._hub_api_protocol, sock=sock)
        port: int = self._hub_api_server.sockets[0].getsockname()[1]
        log.info("hub API reachable through the tunnel on %s:%d", LOOPBACK, port)
        return port

    def _hub_api_protocol(self) -> asyncio.Protocol:
        session = self.session
        if session is None or not session.carries_streams:
            log.warning("hub API connection refused: not connected to the broker")
            return RefusingProtocol()
        return StreamBridge(session, None, SERVICE_HUB_API)

    def tls_context(self) -> ssl.SSLContext | None:
        if urlsplit(self.config.url).scheme != "wss":
            return None
        if self._pins and not (self.config.cafile or self.config.cadata):
            # Pinned only: the certificate's fingerprint is the whole check (verify_pin), not a CA.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=self.config.cafile, cadata=self.config.cadata)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def verify_pin(self, transport: asyncio.BaseTransport) -> str | None:
        """With --fingerprint: the broker's certificate must be one of the pinned ones. Runs after the
        TLS handshake and before the upgrade request, which carries the token, is sent. Returns what is
        wrong, or None."""
        if not self._pins:
            return None
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return "the broker presented no certificate"
        digest = hashlib.sha256(der).digest()
        if digest in self._pins:
            return None
        return f"the broker's certificate {format_fingerprint(digest)} matches no --fingerprint"

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff and jitter; returns only after ``stop()``."""
        rng = random.Random()
        delays = backoff_delays(self.config.backoff_initial, self.config.backoff_max, rng)
        ssl_context = self.tls_context()
        if self.proxy is not None:
            log.info("dialing the broker through the HTTP proxy %s (from %s)", self.proxy, self.proxy.source)
        try:
            while not self._stopping:
                self._retry_after = 0.0
                served = await self._connect_once(ssl_context)
                if self._stopping:
                    return
                if served:
                    delays = backoff_delays(self.config.backoff_initial, self.config.backoff_max, rng)
                delay = max(next(delays), self._retry_after)
                log.info("reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)
        finally:
            await self._end_session("the agent is stopping")

    async def _end_session(self, why: str) -> None:
        """Close the current session (resetting its streams, if it still has any) and wait for it."""
        session, run = self.session, self._session_run
        self.session = self._session_run = None
        if session is not None and session.closed is None:
            if session.suspended:
                log.warning("dropping the session's %d waiting streams: %s", session.stream_count, why)
            session.close(ErrorCode.SHUTTING_DOWN, why)
        if run is not None:
            await asyncio.gather(run, return_exceptions=True)

    async def open_link(self, link: asyncio.BaseProtocol, ssl_context: ssl.SSLContext | None, timeout: float) -> None:
        """Connect ``link`` to the broker, directly or through the proxy, with TLS unless --insecure."""
        host, port = self.config.broker_address
        loop = asyncio.get_running_loop()
        hostname = host if ssl_context is not None else None
        if self.proxy is None:
            await asyncio.wait_for(loop.create_connection(lambda: link, host, port, ssl=ssl_context,
                                                          server_hostname=hostname), timeout)
            return
        deadline = loop.time() + timeout
        sock = await open_through(self.proxy, host, port, timeout)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: link, sock=sock, ssl=ssl_context,
                                                          server_hostname=hostname),
                                   max(0.0, deadline - loop.time()))
        except BaseException:
            sock.close()
            raise

    async def _connect_once(self, ssl_context: ssl.SSLContext | None) -> bool:
        """One connection attempt; True if a session was established."""
        if ssl_context is None:  # at every connect, so the log shows it wherever one reads it
            log.warning("connecting over plain ws:// (--insecure): the token travels unencrypted")
        held = self.session if self.session is not None and self.session.resumable else None
        headers = {
            "Authorization": f"Bearer {self.config.token}",
            "User-Agent": f"batchtunnel-agent/{__version__}",
        }
        if held is not None:
            headers[SESSION_HEADER] = held.session_id
        link = WebSocketLink.client(self.config.url, headers, self.verify_pin)
        try:
            await self.open_link(link, ssl_context, self.config.connect_timeout)
            await link.wait_handshake(self.config.connect_timeout)
        except HandshakeRejected as exc:
            link.abort()
            # Honoured, but never past the longest backoff: a broker (or something pretending to be one)
            # cannot park the agent for days.
            self._retry_after = min(exc.retry_after or 0.0, self.config.backoff_max)
            if exc.status in (400, 401, 403):
                # A refused credential does not mend by itself: retry at the slowest pace, which also
                # keeps a cluster's shared NAT address far from the broker's failure limit.
                self._retry_after = self.config.backoff_max
                log.error("the broker refused this agent's credential (HTTP %d: %s): check the tunnel token; "
                          "was the tunnel deleted?", exc.status, exc)
            elif exc.retry_after:
                log.warning("the broker answered HTTP %d (%s); it asks to retry in %.0f s (waiting %.0f s at most)",
                            exc.status, exc, exc.retry_after, self._retry_after)
            else:
                log.warning("the broker answered HTTP %d: %s", exc.status, exc)
            return False
        except PeerRejected as exc:
            log.error("not sending the token to %s: %s", _safe_url(self.config.url), exc)
            return False
        except ProxyRefused as exc:
            link.abort()
            if exc.status in (401, 403, 407):  # the proxy's policy or credentials: they do not mend by themselves
                self._retry_after = self.config.backoff_max
                log.error("cannot reach the broker at %s: %s", _safe_url(self.config.url), exc)
            else:
                log.warning("cannot reach the broker at %s: %s", _safe_url(self.config.url), exc)
            return False
        except (OSError, asyncio.TimeoutError) as exc:
            link.abort()
            log.warning("cannot reach the broker at %s: %s", _safe_url(self.config.url), exc or type(exc).__name__)
            return False
        offered = link.response_headers.get(SESSION_HEADER.lower(), "")
        if held is not None and offered == held.session_id and held.resumable:
            held.attach(link)
            log.info("connected to %s; resuming the session (%d streams)", _safe_url(self.config.url),
                     held.stream_count)
            session = held
            started = True
        else:
            if self.session is not None:
                await self._end_session("the broker no longer holds this session (restarted, or past its grace "
                                        "period)")
            session = TunnelSession(
                Connection(Side.AGENT, self.config.wire), link, name="agent", accept=self._accept,
                heartbeat_interval=self.config.heartbeat_interval, heartbeat_timeout=self.config.heartbeat_timeout,
                resume_grace=self.config.resume_grace, session_id=offered or None,
            )
            self.session = session
            self._session_run = asyncio.ensure_future(session.run())  # owned here: see _end_session
            started = False
            try:
                await session.wait_started(self.config.connect_timeout)
                started = True
                log.info("connected to %s", _safe_url(self.config.url))
            except (asyncio.TimeoutError, asyncio.CancelledError):
                session.close()
        try:
            if started:
                self.connected.set()
            await session.wait_link_down()
        finally:
            self.connected.clear()
        if session.suspended:
            log.info("link to the broker lost; %d streams wait for a new one", session.stream_count)
        else:  # the session is over
            run = self._session_run
            if run is not None:
                closed = await asyncio.shield(run)
                log.info("disconnected from the broker: %s", closed)
            self.session = self._session_run = None
        return started

    async def _accept(self, session: TunnelSession, bridge: StreamBridge) -> None:
        assert bridge.stream_id is not None
        if self.config.allow_ports and bridge.port not in self.config.allow_ports:
            log.warning("stream %d to port %d refused: not in --allow-port", bridge.stream_id, bridge.port)
            session.reset(bridge.stream_id, ErrorCode.REFUSED_STREAM)
            return
        # Loopback only: the agent is never a proxy into the cluster's network.
        await serve_local(session, bridge, LOOPBACK, self.config.connect_timeout)

    def stop(self) -> None:
        """Stop reconnecting and close the current session."""
        self._stopping = True
        if self._hub_api_server is not None:
            self._hub_api_server.close()
        if self.session is not None:
            self.session.close()


def _safe_url(url: str) -> str:
    """The URL without any userinfo, for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"
