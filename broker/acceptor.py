"""The agent endpoint's listening socket: the unauthenticated-connection cap, then TLS, then the link.

The cap counts a connection from the moment it is accepted, before TLS. Counting only after TLS is
not enough: a TLS handshake in progress costs the broker far more than an idle agent (measured with
2000 TCP connections that never send a ClientHello: +100 MiB on uvloop, +620 MiB on asyncio, most of
it never given back), so a crowd of half-open connections must be refused before any TLS state
exists. Over the cap the socket is closed at once: nothing can be said before TLS; the admin log says
why, and agents redial with backoff.

Our own accept loop hands each admitted socket to ``loop.connect_accepted_socket``, which runs the TLS
handshake and returns when it ended, well or not: so the count is always released.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
import ssl
import time
from collections.abc import Callable

from ..session import TaskOwner, WebSocketLink
from .admission import Admission
from .memory import TlsBuffers

log = logging.getLogger(__name__)

CROWD_LOG_INTERVAL = 10.0
"""Seconds between two log lines about connections refused by the cap."""
ACCEPT_PAUSE = 0.5
"""Seconds the accept loop rests when the process is out of file descriptors."""


class AgentListener:
    """Accepts agents' connections on ``host:port`` until ``close()``.

    Args:
        new_link: makes the server-side WebSocketLink of one connection; it must call the given
            callback when its upgrade is answered or it ends before that.
        admission: holds the cap and the count.
        ssl_context: None for a plain WebSocket (behind a TLS-terminating proxy, or --insecure).
        handshake_timeout: seconds for the TLS handshake.
    """

    def __init__(self, new_link: Callable[[Callable[[], None]], WebSocketLink], admission: Admission,
                 ssl_context: ssl.SSLContext | None, handshake_timeout: float) -> None:
        self.new_link = new_link
        self.admission = admission
        self.ssl_context = ssl_context
        self._tls_buffers = TlsBuffers()
        self.handshake_timeout = handshake_timeout
        self.port = 0
        self._sock: socket.socket | None = None
        self._tasks = TaskOwner("agent listener")
        self._crowd_logged = -math.inf

    def open(self, host: str, port: int) -> None:
        """Bind and start accepting. Raises OSError if the address cannot be bound."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=1024)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._tasks.spawn(self._accept_loop(sock), "accept agents")

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        await self._tasks.aclose()

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept agents: %s; pausing %.1f s", exc, ACCEPT_PAUSE)
                    await asyncio.sleep(ACCEPT_PAUSE)
                    continue
                raise
            # asyncio turns Nagle's algorithm off only for sockets whose protocol number is
            # IPPROTO_TCP; accepted ones have 0. With it on, a stream's OPEN and its first bytes wait
            # for the agent's delayed ACK: 40 ms per new connection (tests/tunnel/test_nagle.py).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            host = str(address[0])
            peer = f"{host}:{address[1]}"
            if not self.admission.open(host):
                sock.close()
                self._refused(peer)
                continue
            self._tasks.spawn(self._connect(sock, host, peer), f"connection from {peer}")

    async def _connect(self, sock: socket.socket, host: str, peer: str) -> None:
        """TLS (if any), then the link's own handshake; the link releases the count from there on."""
        link = self.new_link(lambda: self.admission.done(host))
        if self.ssl_context is not None:
            self._tls_buffers.before_tls()  # the TLS layer's read buffer apart from the heap (broker/memory.py)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: link, sock, ssl=self.ssl_context,
                ssl_handshake_timeout=self.handshake_timeout if self.ssl_context else None)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            sock.close()
            if not link.connected:  # the link never started, so it will not report
                self.admission.done(host)
            log.debug("connection from %s: no TLS: %s", peer, exc or type(exc).__name__)

    def _refused(self, peer: str) -> None:
        now = time.monotonic()
        if now - self._crowd_logged >= CROWD_LOG_INTERVAL:
            self._crowd_logged = now
            log.warning("connection from %s closed: %d connections are already waiting to authenticate "
                        "(--max-unauthenticated), or its address holds half of them; %d + %d refused so far",
                        peer, self.admission.pending, self.admission.refused_pending_total,
                        self.admission.refused_share_total)
