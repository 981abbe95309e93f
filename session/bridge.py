"""One tunnel stream bridged to one local TCP connection, with backpressure both ways.

Reading: local bytes go to the stream through its :class:`Carrier` (the session); the socket is
paused while the stream's window is used up or while the session's output is backed up, each
reason held by the bridge (:class:`Pause`) until the carrier says it is over. Writing: peer bytes
are written to the socket and acknowledged (granting the peer more credit) only while the socket's
write buffer is below its high-water mark; otherwise the acknowledgement waits for
``resume_writing``.

The bridge knows its session only as a :class:`Carrier`, the few calls it makes on it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Protocol, cast

from ..wire import ErrorCode, InvalidState

log = logging.getLogger(__name__)


class Pause(enum.IntFlag):
    """Why a bridge stopped reading its socket (several reasons may hold at once)."""

    NONE = 0
    WINDOW = 1
    """The stream's send window is spent: until the session reports it drained."""
    OUTPUT = 2
    """The session's output is backed up: until the link takes it."""


class Carrier(Protocol):
    """What a bridge needs from the session that carries its stream."""

    name: str
    """For log lines."""

    def open_stream_for(self, bridge: StreamBridge, port: int) -> int | None:
        """Open a stream towards ``port`` for a new local connection; None if impossible now."""

    def send(self, bridge: StreamBridge, data: bytes) -> Pause:
        """Send local data on the bridge's stream; returns why reading must pause (NONE: it need not)."""

    def end_stream(self, stream_id: int) -> None:
        """The local side will send no more."""

    def reset(self, stream_id: int, code: int) -> None:
        """Abort the stream."""

    def acknowledge(self, stream_id: int, length: int) -> None:
        """``length`` bytes of peer data left our hands (the peer may send more)."""

    def forget(self, bridge: StreamBridge) -> None:
        """The bridge's local connection is gone."""


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

    def __init__(self, carrier: Carrier, stream_id: int | None = None, port: int = 0) -> None:
        self.carrier = carrier
        self.stream_id = stream_id
        self.port = port
        self.transport: asyncio.Transport | None = None
        self._early: list[bytes] = []   # peer data that arrived before the socket connected
        self._write_paused = False
        self._unacked = 0
        self._local_eof = False
        self._peer_eof = False
        self._done = False
        self.paused = Pause.NONE  # why reading the socket is paused

    # -- asyncio.Protocol: the local socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self._done:  # reset while we were connecting
            self.transport.abort()
            return
        if self.stream_id is None:
            sid = self.carrier.open_stream_for(self, self.port)
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
            pause = self.carrier.send(self, data)
        except InvalidState:
            self.abort()
            return
        if pause:
            self.paused |= pause
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._local_eof = True
        if self.stream_id is not None and not self._done:
            try:
                self.carrier.end_stream(self.stream_id)
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
                self.carrier.reset(self.stream_id, ErrorCode.CANCEL)
        self._done = True
        self.carrier.forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._unacked and self.stream_id is not None:
            self.carrier.acknowledge(self.stream_id, self._unacked)
            self._unacked = 0

    # -- called by the carrier

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
            self.carrier.acknowledge(self.stream_id, len(data))

    def peer_ended(self) -> None:
        """The peer half-closed: no more data will come."""
        self._peer_eof = True
        if self.transport is not None:
            self._finish_writing()

    def unpause(self, reason: Pause) -> None:
        """``reason`` no longer holds: read the socket again unless another reason still does."""
        self.paused &= ~reason
        if not self.paused and not self._done and self.transport is not None:
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


async def serve_local(carrier: Carrier, bridge: StreamBridge, host: str, timeout: float,
                      port: int | None = None) -> None:
    """Connect a stream the peer opened to ``host:port`` (default: the port the stream names).

    Resets the stream with CONNECT_FAILED if that fails.
    """
    assert bridge.stream_id is not None
    target = bridge.port if port is None else port
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.create_connection(lambda: bridge, host, target), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        # Refused is what a starting notebook says to every readiness check (the spawner's, every
        # 50 ms, then JupyterHub's): at INFO, each start would log a screenful of it.
        level = logging.DEBUG if isinstance(exc, ConnectionRefusedError) else logging.INFO
        log.log(level, "session %s: stream %d: cannot connect to %s:%d: %s", carrier.name, bridge.stream_id,
                host, target, exc or "timed out")
        carrier.reset(bridge.stream_id, ErrorCode.CONNECT_FAILED)
