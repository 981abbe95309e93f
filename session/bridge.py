"""One tunnel stream bridged to one local TCP connection, with backpressure both ways.

Reading: local bytes go to ``Connection.send_data``; the socket is paused while
the stream's window is used up (until ``StreamDrained``) or while the session's
output is backed up (until the writer takes it: see ``TunnelSession.send``).
Writing: peer bytes are written to the socket and acknowledged (granting the
peer more credit) only while the socket's write buffer is below its high-water
mark; otherwise the acknowledgement waits for ``resume_writing``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from ..wire import ErrorCode, InvalidState

if TYPE_CHECKING:
    from .session import TunnelSession

log = logging.getLogger(__name__)

SERVICE_HUB_API = 1
"""The service an agent-opened stream names to reach the hub's API (docs/protocol.md §5.1)."""


class RefusingProtocol(asyncio.Protocol):
    """Closes a local connection at once (no session to carry it): the client sees a reset."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()


class StreamBridge(asyncio.Protocol):
    """asyncio protocol for the local end of a stream.

    Created either for an accepted hub-side client (the stream is opened when the
    connection is made) or for an outgoing connection to a target port (the
    stream already exists; data may arrive before the socket is connected).
    """

    def __init__(self, session: TunnelSession, stream_id: int | None = None, port: int = 0) -> None:
        self.session = session
        self.stream_id = stream_id
        self.port = port
        self.transport: asyncio.Transport | None = None
        self._early: list[bytes] = []   # peer data that arrived before the socket connected
        self._write_paused = False
        self._unacked = 0
        self._local_eof = False
        self._peer_eof = False
        self._done = False
        self.window_blocked = False  # reading paused: the stream's send window is spent
        self.congested = False       # reading paused: the session's output is backed up

    # -- asyncio.Protocol: the local socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self._done:  # reset while we were connecting
            self.transport.abort()
            return
        if self.stream_id is None:
            sid = self.session.open_stream_for(self, self.port)
            if sid is None:
                self._done = True
                self.transport.abort()
                return
            self.stream_id = sid
        early, self._early = self._early, []
        for chunk in early:
            self.deliver(chunk)
        if self._peer_eof:
            self._finish_writing()

    def data_received(self, data: bytes) -> None:
        if self._done or self.stream_id is None:
            return
        try:
            if not self.session.send(self, data):
                assert self.transport is not None
                self.transport.pause_reading()
        except InvalidState:
            self.abort()

    def eof_received(self) -> bool:
        self._local_eof = True
        if self.stream_id is not None and not self._done:
            try:
                self.session.end_stream(self.stream_id)
            except InvalidState:
                pass
        if self._peer_eof:
            self._close()
            return False
        return True  # keep the socket open for the other direction

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream_id is not None and not self._done:
            # Lost before both directions ended: the local side aborted.
            if not (self._local_eof and self._peer_eof):
                self.session.reset(self.stream_id, ErrorCode.CANCEL)
        self._done = True
        self.session.forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._unacked and self.stream_id is not None:
            self.session.acknowledge(self.stream_id, self._unacked)
            self._unacked = 0

    # -- called by the session for peer events

    def deliver(self, data: bytes) -> None:
        """Peer data for the local socket."""
        if self.transport is None:
            self._early.append(data)
            return
        if self._done:
            return
        self.transport.write(data)
        if self._write_paused:
            self._unacked += len(data)
        elif self.stream_id is not None:
            self.session.acknowledge(self.stream_id, len(data))

    def peer_ended(self) -> None:
        """The peer half-closed: no more data will come."""
        self._peer_eof = True
        if self.transport is not None:
            self._finish_writing()

    def maybe_resume(self) -> None:
        """Read the local socket again unless something still holds it back."""
        if not (self.window_blocked or self.congested or self._done) and self.transport is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        """The stream was reset: drop the local connection at once (the client sees a reset)."""
        self._done = True
        if self.transport is not None:
            self.transport.abort()

    def _finish_writing(self) -> None:
        assert self.transport is not None
        if self._local_eof:
            self._close()
        elif self.transport.can_write_eof():
            self.transport.write_eof()

    def _close(self) -> None:
        self._done = True
        if self.transport is not None:
            self.transport.close()
