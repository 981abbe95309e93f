"""One WebSocket connection carrying a tunnel session, driven synchronously.

``WebSocketLink`` is an ``asyncio.Protocol`` around websockets' sans-I/O
protocol (``ClientProtocol`` in the agent, ``ServerProtocol`` in the broker).
Everything on the data path happens inside transport callbacks: bytes from the
network become wire events and socket writes in the same callback, and output
is written as soon as the current loop iteration ends. No task switch per
message, no queue between layers.

Client (agent)::

    link = WebSocketLink.client(url, headers)
    await loop.create_connection(lambda: link, host, port, ssl=ctx)
    await link.wait_handshake(timeout)       # raises HandshakeRejected on non-101

Server (broker)::

    loop.create_server(lambda: WebSocketLink.server(on_request, timeout), host, port, ssl=ctx)
    # on_request(link, request) -> None to accept (after setting link.receiver), or (status, text)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, cast

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

log = logging.getLogger(__name__)

MAX_MESSAGE_IN = 2 * 1024 * 1024
"""Largest WebSocket message accepted; our sender never sends more than 1 MiB."""
CLOSE_TIMEOUT = 2.0
WRITE_HIGH = 512 * 1024
"""The socket's write buffer above which the link reports itself not writable."""


class HandshakeRejected(Exception):
    """The server answered the upgrade with another status than 101. ``status`` says which."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Receiver(Protocol):
    """What a link reports to (a TunnelSession)."""

    def message_received(self, data: bytes) -> None: ...

    def writing_resumed(self) -> None: ...

    def link_lost(self) -> None: ...


OnRequest = Callable[["WebSocketLink", Request], "tuple[int, str] | None"]


class WebSocketLink(asyncio.Protocol):
    """A WebSocket connection whose binary messages go to ``receiver``."""

    def __init__(self, ws: WsProtocol, on_request: OnRequest | None = None,
                 handshake_timeout: float | None = None) -> None:
        self.ws = ws
        self.receiver: Receiver | None = None
        self.peer = "?"
        self._on_request = on_request
        self._handshake_timeout = handshake_timeout
        self._transport: asyncio.Transport | None = None
        self._writable = True
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._request: Request | None = None

    @classmethod
    def client(cls, url: str, headers: dict[str, str]) -> WebSocketLink:
        ws = ClientProtocol(parse_uri(url), max_size=MAX_MESSAGE_IN)
        link = cls(ws)
        request = ws.connect()
        for name, value in headers.items():
            if name in request.headers:
                del request.headers[name]
            request.headers[name] = value
        link._request = request
        return link

    @classmethod
    def server(cls, on_request: OnRequest, handshake_timeout: float) -> WebSocketLink:
        return cls(ServerProtocol(max_size=MAX_MESSAGE_IN), on_request, handshake_timeout)

    # -- what a session uses

    @property
    def writable(self) -> bool:
        return self._writable and self.ws.state is State.OPEN

    def write(self, data: bytes) -> None:
        """Send one binary message (no-op once the WebSocket is closing)."""
        if self.ws.state is not State.OPEN:
            return
        self.ws.send_binary(data)
        self._flush()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the TCP connection is dropped after CLOSE_TIMEOUT at the latest."""
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        self._close_soon()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def wait_handshake(self, timeout: float) -> None:
        """Client: wait for the 101 answer. Raises HandshakeRejected, or TimeoutError."""
        await asyncio.wait_for(asyncio.shield(self._handshake), timeout)

    async def wait_closed(self) -> None:
        await self._lost.wait()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if isinstance(self.ws, ClientProtocol):
            assert self._request is not None
            self.ws.send_request(self._request)
            self._flush()
        elif self._handshake_timeout is not None:
            # Slowloris guard: the upgrade must complete in time (the session adds its own HELLO timeout).
            self._timer = asyncio.get_running_loop().call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self._handshake.done():
            self._handshake.set_exception(ConnectionError("connection closed during the WebSocket handshake"))
            self._handshake.exception()  # retrieved: no "never retrieved" warning when nobody waits
        self._lost.set()
        if self.receiver is not None:
            self.receiver.link_lost()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        if self.receiver is not None:
            self.receiver.writing_resumed()

    # -- internals

    def _process(self) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._on_upgrade_request(event)
            elif isinstance(event, Response):
                self._on_upgrade_response(event)
            elif event.opcode is Opcode.BINARY or event.opcode is Opcode.CONT:
                if self.receiver is not None and event.data:
                    self.receiver.message_received(bytes(event.data))
            elif event.opcode is Opcode.TEXT:
                self.ws.fail(1003, "binary messages only")
        self._flush()
        if self.ws.close_expected():
            self._close_soon()

    def _on_upgrade_request(self, request: Request) -> None:
        assert isinstance(self.ws, ServerProtocol) and self._on_request is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        refusal = self._on_request(self, request)
        if refusal is None:
            response = self.ws.accept(request)
        else:
            response = self.ws.reject(*refusal)
        self.ws.send_response(response)

    def _on_upgrade_response(self, response: Response) -> None:
        if self._handshake.done():
            return
        if self.ws.handshake_exc is None:
            self._handshake.set_result(None)
        else:
            body = (response.body or b"").decode("utf-8", "replace").strip()[:200]
            self._handshake.set_exception(HandshakeRejected(response.status_code, body))

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
            else:  # TLS cannot half-close
                transport.close()

    def _close_soon(self) -> None:
        if self._timer is None and self._transport is not None and not self._lost.is_set():
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)
        if self.ws.state is State.CLOSED and self._transport is not None:
            self._transport.close()

    def _handshake_expired(self) -> None:
        log.warning("connection from %s: no WebSocket upgrade within %.0f s; dropped",
                    self.peer, self._handshake_timeout)
        self.abort()
