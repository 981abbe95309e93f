"""One WebSocket connection carrying a tunnel session, driven synchronously.

``WebSocketLink`` is an ``asyncio.BufferedProtocol``. The opening handshake is ``handshake.py``'s (on
websockets' sans-I/O protocols); once the connection is open every byte goes to our frame codec
(``wsframes``). Everything on the data path then happens inside transport callbacks: no task switch
per message, no queue between layers. The transport (TLS or not) reads into one buffer per thread,
shared by every link, which the codec copies the payloads out of: no buffer is allocated per read,
and an idle link holds none.

Client (agent)::

    link = WebSocketLink.client(url, headers)
    await loop.create_connection(lambda: link, host, port, ssl=ctx)
    await link.wait_handshake(timeout)       # raises HandshakeRejected on non-101

Server (broker)::

    loop.create_server(lambda: WebSocketLink.server(on_request, timeout), host, port, ssl=ctx)
    # on_request(link, request) -> None to accept (after setting link.receiver), or a Refusal
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, cast

from websockets.http11 import Request

from ..wire import FramingError, HandshakeRejected, PeerRejected
from .handshake import MAX_HEAD, Handshake, Refusal
from .wsframes import Buffer, CloseCode, Control, FrameParser, Opcode, encode, encode_close

log = logging.getLogger(__name__)

MAX_MESSAGE_IN = 2 * 1024 * 1024
"""Largest WebSocket frame accepted; our sender never sends more than 1 MiB."""
CLOSE_TIMEOUT = 2.0
WRITE_HIGH = 512 * 1024
"""The socket's write buffer above which the link reports itself not writable."""
MAX_HELD = 4 * 1024 * 1024
"""Messages kept for a receiver not chosen yet (an agent deciding whether it resumes), at most."""
READ_BUFFER = 256 * 1024
"""What one read may bring, at most (asyncio's and uvloop's TLS layers read 256 KiB at a time)."""


class _ReadBuffer(threading.local):
    """The buffer links read into: one per thread (an event loop's callbacks run on its thread, and
    each read is parsed before the next one starts)."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(READ_BUFFER))


_read_buffer = _ReadBuffer()


class Receiver(Protocol):
    """What a link reports to (a TunnelSession)."""

    def message_received(self, data: bytes) -> None: ...

    def writing_resumed(self) -> None: ...

    def link_lost(self) -> None: ...


OnRequest = Callable[["WebSocketLink", Request], "Refusal | None"]
VerifyPeer = Callable[[asyncio.BaseTransport], "str | None"]
"""Client: checks the server once TLS is up, before anything is sent; returns why it is refused."""


class Phase(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSING = "closing"   # we sent CLOSE; waiting for the peer's, or the TCP close
    CLOSED = "closed"


class WebSocketLink(asyncio.BufferedProtocol):
    """A WebSocket connection whose binary messages go to ``receiver``."""

    def __init__(self, handshake: Handshake, client: bool, on_request: OnRequest | None = None,
                 handshake_timeout: float | None = None, on_handshake_end: Callable[[], None] | None = None,
                 verify_peer: VerifyPeer | None = None) -> None:
        self._hs: Handshake | None = handshake  # only the opening handshake needs it; dropped once open
        self._receiver: Receiver | None = None
        self._held: list[bytes] = []  # messages that arrived before a receiver was set
        self._held_size = 0
        self.accept_headers: list[tuple[str, str]] = []  # server: added to the 101 answer
        self.response_headers: dict[str, str] = {}      # client: the 101 answer's headers
        self.peer = "?"
        self.peer_host = "?"
        self.phase = Phase.HANDSHAKE
        self._client = client
        self._parser = FrameParser(masked=not self._client, max_payload=MAX_MESSAGE_IN)
        self._on_request = on_request
        self._handshake_timeout = handshake_timeout
        self._transport: asyncio.Transport | None = None
        self._writable = True
        self.created = time.monotonic()  # for a server link: when the connection was accepted
        self._pong_owed: bytes | None = None  # the latest PING's payload, while we cannot write
        self._paused_by_receiver = False  # pause_reading(): the session's answers wait to be written
        self._paused_for_pong = False  # a PONG is owed and cannot be written: no more PINGs are read
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost = False
        self._timer: asyncio.TimerHandle | None = None
        self._on_handshake_end = on_handshake_end
        self._verify_peer = verify_peer

    @classmethod
    def client(cls, url: str, headers: dict[str, str], verify_peer: VerifyPeer | None = None) -> WebSocketLink:
        return cls(Handshake.client(url, headers, MAX_MESSAGE_IN), True, verify_peer=verify_peer)

    @classmethod
    def server(cls, on_request: OnRequest, handshake_timeout: float,
               on_handshake_end: Callable[[], None] | None = None) -> WebSocketLink:
        """``on_handshake_end`` is called once, when the upgrade request is answered or the connection
        ends before that (the broker counts connections waiting to authenticate with it)."""
        return cls(Handshake.server(MAX_MESSAGE_IN), False, on_request, handshake_timeout, on_handshake_end)

    # -- what a session uses

    @property
    def receiver(self) -> Receiver | None:
        return self._receiver

    @receiver.setter
    def receiver(self, receiver: Receiver | None) -> None:
        """Messages that arrived before it was set reach it on the next loop iteration, in order."""
        self._receiver = receiver
        if receiver is not None and self._held:
            asyncio.get_running_loop().call_soon(self._release_held)

    def _release_held(self) -> None:
        while self._held and self._receiver is not None and self.phase is Phase.OPEN:
            data = self._held.pop(0)
            self._held_size -= len(data)
            self._receiver.message_received(data)

    @property
    def connected(self) -> bool:
        """connection_made() was called (for a TLS server: the TLS handshake completed)."""
        return self._transport is not None

    @property
    def writable(self) -> bool:
        return self._writable and self.phase is Phase.OPEN and not self._closing()

    def _closing(self) -> bool:
        """The transport was closed or aborted; connection_lost has not been called yet."""
        return self._transport is None or self._transport.is_closing()

    def write(self, data: Buffer) -> None:
        """Send one binary message (dropped unless the WebSocket is open). Not on a transport that is
        closing: the session writes at once now, which can be between a reset and connection_lost, and
        the TLS layer logs a warning for each such write."""
        if self.phase is Phase.OPEN and not self._closing():
            assert self._transport is not None  # _closing() says so
            # One call: a TLS transport encrypts both parts, then sends once.
            self._transport.writelines(encode(Opcode.BINARY, data, self._client))

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the TCP connection is dropped after CLOSE_TIMEOUT at the latest."""
        if self.phase is Phase.OPEN:
            self._send_close(code, reason)
        elif self.phase is Phase.HANDSHAKE:
            self.abort()

    def pause_reading(self) -> None:
        """Stop reading the socket (the session's answers to the peer wait to be written)."""
        self._paused_by_receiver = True
        self._set_reading()

    def resume_reading(self) -> None:
        self._paused_by_receiver = False
        self._set_reading()

    def _set_reading(self) -> None:
        """Read the socket unless the session or an unwritable PONG says not to."""
        if self._transport is None or self._transport.is_closing():
            return
        if self._paused_by_receiver or self._paused_for_pong:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def wait_handshake(self, timeout: float) -> None:
        """Client: wait for the 101 answer. Raises HandshakeRejected, ConnectionError or TimeoutError."""
        await asyncio.wait_for(asyncio.shield(self._handshake), timeout)

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.peer_host = str(peer[0]) if peer else "?"
        if self._client:
            assert self._hs is not None
            problem = self._verify_peer(transport) if self._verify_peer is not None else None
            if problem is not None:  # before the request: its headers carry the credential
                self._handshake.set_exception(PeerRejected(problem))
                self.abort()
                return
            self._hs.send_request()
            self._flush_handshake()
            return
        if self._handshake_timeout is not None:
            # Slowloris guard: the upgrade must complete in time (the session adds its own HELLO timeout).
            self._timer = asyncio.get_running_loop().call_later(self._handshake_timeout, self._handshake_expired)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_read_buffer.view[:nbytes])

    def data_received(self, data: Buffer) -> None:
        """``data`` may be a view of the shared read buffer: whatever is kept of it is copied."""
        if self.phase is Phase.HANDSHAKE:
            self._handshake_data(bytes(data))
        elif self.phase is not Phase.CLOSED:
            self._frames(data)

    def eof_received(self) -> bool | None:
        if self.phase is Phase.HANDSHAKE and self._hs is not None:
            self._hs.receive_eof()  # a refusal whose body ends at EOF
            self._handshake_progress()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = Phase.CLOSED
        self._end_handshake()
        if self._timer is not None:
            self._timer.cancel()
        if not self._handshake.done():
            self._handshake.set_exception(ConnectionError("connection closed during the WebSocket handshake"))
            self._handshake.exception()  # retrieved: no "never retrieved" warning when nobody waits
        self._lost = True
        if self._receiver is not None:
            self._receiver.link_lost()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._send_pong()
        if self._paused_for_pong:
            self._paused_for_pong = False
            self._set_reading()
        if self._receiver is not None:
            self._receiver.writing_resumed()

    def _send_pong(self) -> None:
        if self._pong_owed is not None and self._writable and self.phase is Phase.OPEN and self._transport:
            for part in encode(Opcode.PONG, self._pong_owed, self._client):
                self._transport.write(part)
            self._pong_owed = None

    # -- opening handshake (handshake.py)

    def _handshake_data(self, data: bytes) -> None:
        hs = self._hs
        assert hs is not None
        rest = hs.receive_data(data)
        if hs.head_too_large:
            log.warning("connection from %s: HTTP head over %d bytes; dropped", self.peer, MAX_HEAD)
            self.abort()
            return
        if not hs.head_done:
            return
        self._handshake_progress()
        if rest:
            if self.phase is Phase.OPEN:
                self._frames(rest)
            elif self.phase is Phase.HANDSHAKE:
                hs.receive_body(rest)
                self._handshake_progress()

    def _handshake_progress(self) -> None:
        """Act on what the handshake has: the client's request (server), the server's answer (client)."""
        hs = self._hs
        assert hs is not None
        if self._client:
            self._on_upgrade_response(hs)
        else:
            request = hs.upgrade_request()
            if request is not None:
                self._on_upgrade_request(hs, request)
        self._flush_handshake()
        if self.phase is Phase.OPEN:
            self._hs = None

    def _on_upgrade_request(self, hs: Handshake, request: Request) -> None:
        assert self._on_request is not None and self._transport is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._end_handshake()
        try:
            refusal = self._on_request(self, request)
        except Exception:  # our bug: answer it, keep serving everyone else
            log.error("connection from %s: the upgrade request could not be handled", self.peer, exc_info=True)
            refusal = Refusal(500, "internal error\n")
        if refusal is None:
            hs.accept(request, self.accept_headers)
            self.phase = Phase.OPEN
        else:
            hs.reject(refusal)
            self._flush_handshake()
            self._transport.close()  # once the refusal is written

    def _end_handshake(self) -> None:
        callback, self._on_handshake_end = self._on_handshake_end, None
        if callback is not None:
            callback()

    def _on_upgrade_response(self, hs: Handshake) -> None:
        if self._handshake.done():
            return
        answer = hs.response()
        if isinstance(answer, HandshakeRejected):
            self._handshake.set_exception(answer)
        elif answer is not None:
            self.response_headers = answer
            self.phase = Phase.OPEN
            self._handshake.set_result(None)

    def _flush_handshake(self) -> None:
        if self._transport is None or self._hs is None:
            return
        for chunk in self._hs.data_to_send():
            self._transport.write(chunk)

    # -- open connection (wsframes)

    def _frames(self, data: Buffer) -> None:
        try:
            items = self._parser.feed(data)
        except FramingError as exc:
            log.warning("WebSocket from %s: %s; closing (%d)", self.peer, exc, exc.code)
            self._send_close(exc.code, str(exc))
            self.phase = Phase.CLOSED
            return
        for item in items:
            if isinstance(item, bytes):
                if self.phase is not Phase.OPEN:
                    continue
                if self._receiver is None or self._held:
                    self._hold(item)
                else:
                    self._receiver.message_received(item)
            else:
                self._control(item)

    def _hold(self, data: bytes) -> None:
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size > MAX_HELD:
            log.warning("WebSocket from %s: %d bytes arrived before the session was ready; dropped",
                        self.peer, self._held_size)
            self._held.clear()
            self.abort()

    def _control(self, frame: Control) -> None:
        assert self._transport is not None
        if frame.opcode is Opcode.PING:
            # Answered while we can write; otherwise only the latest is remembered (RFC 6455 5.5.3
            # allows it), so a peer that pings without reading makes us hold one payload, not more,
            # and the socket is not read until the answer can be written: parsing PINGs whose answers
            # nobody reads cost a broker a core (bench/soak.py: 48 MiB of them per 3 s attack).
            self._pong_owed = frame.payload
            self._send_pong()
            if self._pong_owed is not None and not self._paused_for_pong:
                self._paused_for_pong = True
                self._set_reading()
        elif frame.opcode is Opcode.CLOSE:
            if self.phase is Phase.OPEN:  # echo it, then the TCP connection ends
                echo = frame.code if frame.code != CloseCode.NO_STATUS else CloseCode.NORMAL
                self._send_close(echo, "")
            self.phase = Phase.CLOSED
            self._transport.close()

    def _send_close(self, code: int, reason: str) -> None:
        if self._transport is None:
            return
        for part in encode_close(code, reason, self._client):
            self._transport.write(part)
        self.phase = Phase.CLOSING
        self._close_transport_soon()

    def _close_transport_soon(self) -> None:
        if self._timer is None and not self._lost:
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def _handshake_expired(self) -> None:
        log.warning("connection from %s: no WebSocket upgrade within %.0f s; dropped",
                    self.peer, self._handshake_timeout)
        self.abort()
