"""The WebSocket opening handshake (RFC 6455 §4), sans I/O, on websockets' protocols.

websockets' ``ClientProtocol`` (agent) and ``ServerProtocol`` (broker) parse and validate the HTTP
upgrade and compute Sec-WebSocket-Accept. :class:`Handshake` cuts the HTTP head off the byte stream
itself and gives websockets only that (and a refusal's body), so that every byte after a successful
upgrade goes to our frame codec (``wsframes``) instead. ``WebSocketLink`` drives it::

    server: receive_data(bytes) -> upgrade_request() -> accept(request, headers) | reject(refusal)
    client: send_request() ... receive_data(bytes) -> response() -> accepted headers, or refused
    both:   write data_to_send() after every call
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from websockets.client import ClientProtocol
from websockets.http11 import Request, Response
from websockets.protocol import Protocol as WsProtocol
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from ..wire import HandshakeRejected

SESSION_HEADER = "Batchtunnel-Session"
"""Names a session in the upgrade: the broker's 101 answer says which one the agent is in; an agent's
request names the one it wants to resume (docs/protocol.md §8)."""
CHECK_HEADER = "Batchtunnel-Check"
"""An upgrade request with this header asks the broker to check the credential and answer 200 (or
its refusal) without starting a session: ``batchtunnel agent --check``."""

MAX_HEAD = 16 * 1024
"""Largest HTTP head accepted during the opening handshake."""


class _WarningsOnly(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs every handshake header at DEBUG, the agent's Authorization header included, and
    each connection at INFO (ours say more). Its protocol objects get this logger, which passes only
    warnings and errors whatever the configured level."""

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING and self.logger.isEnabledFor(level)


HANDSHAKE_LOG = _WarningsOnly(logging.getLogger(__name__), {})


@dataclass(frozen=True)
class Refusal:
    """A server's answer refusing an upgrade: an HTTP status, a one-line text, extra headers."""

    status: int
    text: str
    headers: tuple[tuple[str, str], ...] = ()


class Handshake:
    """One side of an opening handshake. ``max_size`` is passed to websockets (it bounds frames there,
    which it never sees here once the connection is open)."""

    def __init__(self, ws: WsProtocol) -> None:
        self._ws = ws
        self._head = bytearray()
        self.head_done = False
        self.head_too_large = False
        self.request: Request | None = None  # client: the upgrade request to send

    @classmethod
    def client(cls, url: str, headers: dict[str, str], max_size: int) -> Handshake:
        """The agent's side: the upgrade request to ``url`` with ``headers`` (which may replace websockets')."""
        ws = ClientProtocol(parse_uri(url), max_size=max_size, logger=HANDSHAKE_LOG)
        handshake = cls(ws)
        request = ws.connect()
        for name, value in headers.items():
            if name in request.headers:
                del request.headers[name]
            request.headers[name] = value
        handshake.request = request
        return handshake

    @classmethod
    def server(cls, max_size: int) -> Handshake:
        return cls(ServerProtocol(max_size=max_size, logger=HANDSHAKE_LOG))

    # -- bytes

    def receive_data(self, data: bytes) -> bytes:
        """Feed bytes from the peer. Returns the bytes after the HTTP head when this call completed it
        (the first WebSocket frames, if the upgrade succeeds), else b"". After the head, more bytes
        are a refusal's body, for websockets. Sets ``head_too_large`` past MAX_HEAD."""
        if self.head_done:
            self._ws.receive_data(data)
            return b""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            self.head_too_large = len(self._head) > MAX_HEAD
            return b""
        head, rest = bytes(self._head[:end + 4]), bytes(self._head[end + 4:])
        self.head_done = True
        self._head.clear()
        self._ws.receive_data(head)
        return rest

    def receive_eof(self) -> None:
        """The peer closed: a refusal whose body ends at EOF is complete."""
        if self.head_done:
            self._ws.receive_eof()

    def receive_body(self, data: bytes) -> None:
        """Bytes that followed the head of an upgrade that was not accepted (a refusal's body)."""
        self._ws.receive_data(data)

    def data_to_send(self) -> list[bytes]:
        return [chunk for chunk in self._ws.data_to_send() if chunk]

    # -- server

    def upgrade_request(self) -> Request | None:
        """The client's upgrade request, once its head arrived."""
        for event in self._ws.events_received():
            if isinstance(event, Request):
                return event
        return None

    def accept(self, request: Request, headers: list[tuple[str, str]]) -> None:
        """Answer 101 with ``headers`` added."""
        ws = self._ws
        assert isinstance(ws, ServerProtocol)
        response = ws.accept(request)
        for name, value in headers:
            response.headers[name] = value
        ws.send_response(response)

    def reject(self, refusal: Refusal) -> None:
        """Answer with ``refusal``; then close the connection once this is written."""
        ws = self._ws
        assert isinstance(ws, ServerProtocol)
        response = ws.reject(refusal.status, refusal.text)
        for name, value in refusal.headers:
            response.headers[name] = value
        ws.send_response(response)

    # -- client

    def send_request(self) -> None:
        ws = self._ws
        assert isinstance(ws, ClientProtocol) and self.request is not None
        ws.send_request(self.request)
        self.request = None

    def response(self) -> dict[str, str] | HandshakeRejected | None:
        """The server's answer once complete: its headers (lower-case names) if it accepted the upgrade,
        else why not; None while it is incomplete."""
        for event in self._ws.events_received():
            if not isinstance(event, Response):
                continue
            if self._ws.handshake_exc is None:
                return {name.lower(): value for name, value in event.headers.raw_items()}
            body = (event.body or b"").decode("utf-8", "replace").strip()[:200]
            retry = event.headers.get("Retry-After", "")
            return HandshakeRejected(event.status_code, body, float(retry) if retry.isdigit() else None)
        return None
