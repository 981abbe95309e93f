"""The tunnel protocol state machine: bytes in, events out (docs/protocol.md).

Usage, as in websockets' ``Protocol``::

    conn = Connection(Side.AGENT)
    send(conn.data_to_send())              # the HELLO, queued at construction
    conn.receive_data(chunk)               # network -> protocol; never raises for a bad peer
    for event in conn.events_received():   # StreamOpened, DataReceived, StreamEnded, ...
        ...
    send(conn.data_to_send())              # protocol -> network, after every call

After *every* call, the caller must send what :meth:`data_to_send` returns and
process what :meth:`events_received` returns. Nothing here does I/O, reads a
clock or draws random numbers.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Union

from . import frames
from .codes import ErrorCode
from .events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    PingAcknowledged,
    SessionStarted,
    StreamDrained,
    StreamEnded,
    StreamId,
    StreamOpened,
    StreamReset,
)
from .exceptions import InvalidState, ProtocolError
from .frames import HEADER, HEADER_SIZE, Flag, FrameType
from .hello import Negotiated, Settings, decode_hello, encode_hello
from .windows import ReceiveWindow, SendWindow

Buffer = Union[bytes, bytearray, memoryview]


class Side(enum.Enum):
    """Which end of the tunnel this is. The broker opens odd stream ids, the agent even ones."""

    BROKER = "broker"
    AGENT = "agent"


class State(enum.Enum):
    HANDSHAKE = "handshake"
    """Our HELLO is queued; the peer's has not arrived."""
    OPEN = "open"
    CLOSED = "closed"


class _Stream:
    __slots__ = (
        "id", "port", "send", "recv", "send_open", "recv_open",
        "fin_sent", "pending", "blocked",
    )

    def __init__(self, stream_id: StreamId, port: int, send: SendWindow, recv: ReceiveWindow) -> None:
        self.id = stream_id
        self.port = port
        self.send = send
        self.recv = recv
        self.send_open = True   # we may still send data
        self.recv_open = True   # the peer may still send data
        self.fin_sent = False
        self.pending: deque[memoryview] = deque()  # data waiting for credit
        self.blocked = False    # send_data returned False; owe a StreamDrained


class Connection:
    """One tunnel session, seen from ``side``.

    Args:
        side: BROKER or AGENT.
        settings: the limits we announce and enforce on what we receive.
    """

    def __init__(self, side: Side, settings: Settings | None = None) -> None:
        self.side = side
        self.settings = settings or Settings()
        self.state = State.HANDSHAKE
        self.negotiated: Negotiated | None = None
        self.error: ProtocolError | None = None
        self._streams: dict[int, _Stream] = {}
        self._recv_windows = 0  # sum of the live streams' receive window sizes (the session budget)
        self._own_parity = 1 if side is Side.BROKER else 0
        self._next_id = 1 if side is Side.BROKER else 2
        self._last_peer_id = 0
        self._peer_opened = 0  # live streams the peer opened
        self._own_opened = 0   # live streams we opened
        self._goaway_sent_last: int | None = None
        self._goaway_received_last: int | None = None
        self._in = bytearray()
        self._out: list[Buffer] = []
        self._out_size = 0
        self._events: list[Event] = []
        self._queue(FrameType.HELLO, 0, 0, encode_hello(self.settings))

    # ------------------------------------------------------------------ I/O

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes from the network (the payload of one WebSocket message, or any part).

        A peer's protocol violation does not raise: it queues GOAWAY and a
        ``ConnectionTerminated`` event, and later input is ignored.
        """
        if self.state is State.CLOSED:
            return
        if self._in:
            self._in += data
            consumed = self._parse(self._in)
            del self._in[:consumed]
        else:
            consumed = self._parse(data)
            if consumed < len(data):
                self._in += memoryview(data)[consumed:]

    def receive_eof(self) -> None:
        """Report that the transport closed. Every live stream is reset with CONNECTION_LOST."""
        if self.state is not State.CLOSED:
            self._terminate(ErrorCode.CONNECTION_LOST, "the connection to the peer was lost", local=True)

    def events_received(self) -> list[Event]:
        """Return the events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> bytes:
        """Return the bytes to send to the peer, and forget them. May be empty."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        return out

    @property
    def bytes_to_send(self) -> int:
        """How many bytes :meth:`data_to_send` would return now (for backpressure)."""
        return self._out_size

    # ------------------------------------------------------------- commands

    def open_stream(self, port: int) -> StreamId:
        """Open a stream towards ``port`` on the peer's side.

        Raises:
            InvalidState: the session is not open, the peer is going away, or
                the peer's stream limit is reached.
        """
        self._require_open()
        if self._goaway_received_last is not None:
            raise InvalidState("the peer is going away; it accepts no new streams")
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        assert self.negotiated is not None
        if self._own_opened >= self.negotiated.peer.max_streams:
            raise InvalidState(f"the peer accepts at most {self.negotiated.peer.max_streams} streams")
        if self._over_budget():
            raise InvalidState(f"the session's receive windows reach its budget ({self.settings.session_window})")
        sid = self._next_id
        if sid > frames.MAX_STREAM_ID:
            raise InvalidState("stream ids exhausted; open a new session")
        self._next_id += 2
        stream = self._new_stream(StreamId(sid), port)
        self._own_opened += 1
        self._queue(FrameType.OPEN, 0, sid, frames.encode_open(port))
        return stream.id

    def send_data(self, stream_id: int, data: Buffer, end_stream: bool = False) -> bool:
        """Send ``data`` on a stream, queueing what the peer's window does not allow yet.

        Returns:
            True if everything went out; False if some is queued. Then stop
            reading the stream's source until ``StreamDrained``.

        Raises:
            InvalidState: the stream is not open for sending.
        """
        stream = self._sendable(stream_id)
        if data:
            stream.pending.append(memoryview(data))
        if end_stream:
            stream.send_open = False
        self._flush(stream)
        if stream.pending:
            stream.blocked = True
            return False
        return True

    def end_stream(self, stream_id: int) -> None:
        """Half-close: we send no more data on this stream. We may still receive.

        Raises:
            InvalidState: the stream is not open for sending.
        """
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, code: int = ErrorCode.CANCEL) -> None:
        """Abort a stream in both directions. A stream that is already gone is left alone."""
        stream = self._streams.get(stream_id)
        if stream is None or self.state is State.CLOSED:
            return
        self._remove(stream)
        self._queue(FrameType.RESET, 0, stream_id, frames.encode_u32(code))

    def acknowledge_received(self, stream_id: int, length: int) -> None:
        """Report that ``length`` bytes of a stream's data were delivered locally.

        This is what grants the peer more credit: call it only once the data has
        left our hands (written to the local socket without backing up).
        """
        stream = self._streams.get(stream_id)
        if stream is None or not stream.recv_open or self.state is State.CLOSED:
            return
        before = stream.recv.size
        increment = stream.recv.acknowledge(length, self.settings.session_window - self._recv_windows)
        self._recv_windows += stream.recv.size - before
        if increment:
            self._queue(FrameType.WINDOW_UPDATE, 0, stream_id, frames.encode_u32(increment))

    def ping(self, payload: bytes) -> None:
        """Send a heartbeat PING. ``payload`` is 8 bytes, echoed in ``PingAcknowledged``."""
        if len(payload) != 8:
            raise ValueError("PING payload must be 8 bytes")
        if self.state is not State.CLOSED:
            self._queue(FrameType.PING, 0, 0, payload)

    def go_away(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Tell the peer we accept no new streams.

        With NO_ERROR, open streams carry on. With any other code the session
        ends: streams are reset and ``ConnectionTerminated`` is queued; then
        send the remaining data and close the transport.
        """
        if self.state is State.CLOSED:
            return
        self._goaway_sent_last = self._last_peer_id
        self._queue(FrameType.GOAWAY, 0, 0, frames.encode_goaway(self._last_peer_id, code, reason))
        if code != ErrorCode.NO_ERROR:
            self._terminate(code, reason, local=True)

    # ---------------------------------------------------------- inspection

    def stream_ids(self) -> list[StreamId]:
        """The live streams, in opening order."""
        return [StreamId(sid) for sid in self._streams]

    def send_credit(self, stream_id: int) -> int:
        """Bytes we may still send on a stream before the peer grants more."""
        return self._streams[stream_id].send.credit

    def buffered(self, stream_id: int) -> int:
        """Bytes queued on a stream waiting for credit."""
        return sum(len(chunk) for chunk in self._streams[stream_id].pending)

    # ------------------------------------------------------------- parsing

    def _parse(self, buf: Buffer) -> int:
        """Handle every whole frame in ``buf``; return how many bytes were consumed."""
        pos = 0
        end = len(buf)
        max_payload = self.settings.max_frame
        try:
            with memoryview(buf) as view:
                while end - pos >= HEADER_SIZE:
                    type_byte, flags, sid, length = HEADER.unpack_from(view, pos)
                    type_ = frames.check_header(type_byte, flags, sid, length, max_payload)
                    if end - pos - HEADER_SIZE < length:
                        break
                    start = pos + HEADER_SIZE
                    pos = start + length
                    self._handle(type_, flags, sid, view[start:pos].tobytes())
                    if self.state is State.CLOSED:
                        return end
        except ProtocolError as exc:
            self._fail(exc)
            return end
        return pos

    def _handle(self, type_: FrameType, flags: int, sid: int, payload: bytes) -> None:
        if self.state is State.HANDSHAKE and type_ is not FrameType.HELLO:
            raise ProtocolError(f"{type_.name} before HELLO")
        if type_ is FrameType.DATA:
            self._on_data(sid, flags, payload)
        elif type_ is FrameType.WINDOW_UPDATE:
            self._on_window_update(sid, frames.decode_window_update(payload))
        elif type_ is FrameType.OPEN:
            self._on_open(sid, frames.decode_open(payload))
        elif type_ is FrameType.RESET:
            self._on_reset(sid, frames.decode_reset(payload))
        elif type_ is FrameType.PING:
            frames.decode_ping(payload)
            if flags & Flag.ACK:
                self._events.append(PingAcknowledged(payload))
            else:
                self._queue(FrameType.PING, Flag.ACK, 0, payload)
        elif type_ is FrameType.GOAWAY:
            self._on_goaway(*frames.decode_goaway(payload))
        else:  # HELLO
            if self.state is not State.HANDSHAKE:
                raise ProtocolError("second HELLO")
            self.negotiated = decode_hello(payload, self.settings)
            self.state = State.OPEN
            self._events.append(SessionStarted(self.negotiated))

    def _lookup(self, sid: int, type_: FrameType) -> _Stream | None:
        """The live stream ``sid``; None if it existed and is closed (frames racing a reset are ignored).

        Raises:
            ProtocolError: ``sid`` was never opened.
        """
        stream = self._streams.get(sid)
        if stream is not None:
            return stream
        if sid % 2 == self._own_parity:
            opened = sid < self._next_id
        else:
            opened = sid <= self._last_peer_id
        if not opened:
            raise ProtocolError(f"{type_.name} on stream {sid}, which was never opened")
        return None

    def _on_open(self, sid: int, port: int) -> None:
        if sid % 2 == self._own_parity:
            raise ProtocolError(f"OPEN with stream id {sid}, which belongs to the receiver")
        if sid <= self._last_peer_id:
            raise ProtocolError(f"OPEN with stream id {sid}, not above the last one ({self._last_peer_id})")
        self._last_peer_id = sid
        refused = (
            self._goaway_sent_last is not None
            or self._peer_opened >= self.settings.max_streams
            or self._over_budget()
        )
        if refused:
            self._queue(FrameType.RESET, 0, sid, frames.encode_u32(ErrorCode.REFUSED_STREAM))
            return
        self._new_stream(StreamId(sid), port)
        self._peer_opened += 1
        self._events.append(StreamOpened(StreamId(sid), port))

    def _on_data(self, sid: int, flags: int, payload: bytes) -> None:
        stream = self._lookup(sid, FrameType.DATA)
        if stream is None:
            return
        if not stream.recv_open:
            # Data after FIN: a stream error, not a connection error (§5.2).
            self.reset_stream(sid, ErrorCode.STREAM_CLOSED)
            self._events.append(StreamReset(stream.id, ErrorCode.STREAM_CLOSED))
            return
        stream.recv.receive(len(payload))
        if payload:
            self._events.append(DataReceived(stream.id, payload))
        if flags & Flag.FIN:
            stream.recv_open = False
            self._events.append(StreamEnded(stream.id))
            self._maybe_remove(stream)

    def _on_window_update(self, sid: int, increment: int) -> None:
        stream = self._lookup(sid, FrameType.WINDOW_UPDATE)
        if stream is None:
            return
        stream.send.grant(increment)
        if stream.pending:
            self._flush(stream)

    def _on_reset(self, sid: int, code: int) -> None:
        stream = self._lookup(sid, FrameType.RESET)
        if stream is None:
            return
        self._remove(stream)
        self._events.append(StreamReset(stream.id, code))

    def _on_goaway(self, last: int, code: int, reason: str) -> None:
        self._goaway_received_last = last
        self._events.append(GoAwayReceived(last, code, reason))
        if code != ErrorCode.NO_ERROR:
            self._terminate(code, reason, local=False)
            return
        for stream in list(self._streams.values()):
            if stream.id % 2 == self._own_parity and stream.id > last:
                self._remove(stream)
                self._events.append(StreamReset(stream.id, ErrorCode.REFUSED_STREAM))

    # ----------------------------------------------------------- internals

    def _new_stream(self, sid: StreamId, port: int) -> _Stream:
        assert self.negotiated is not None
        stream = _Stream(
            sid,
            port,
            SendWindow(self.negotiated.peer.initial_window),
            ReceiveWindow(self.settings.initial_window, self.settings.max_window),
        )
        self._streams[sid] = stream
        self._recv_windows += stream.recv.size
        return stream

    def _over_budget(self) -> bool:
        """A new stream's receive window would pass the session's budget."""
        return self._recv_windows + self.settings.initial_window > self.settings.session_window

    def _flush(self, stream: _Stream) -> None:
        """Send as much queued data as the window allows; then FIN if due."""
        max_frame = self.negotiated.peer.max_frame if self.negotiated else frames.MAX_HELLO_BYTES
        pending = stream.pending
        window = stream.send
        sid = stream.id
        while pending and window.credit > 0:
            chunk = pending[0]
            n = min(len(chunk), window.credit, max_frame)
            if n == len(chunk):
                pending.popleft()
            else:
                pending[0] = chunk[n:]
                chunk = chunk[:n]
            window.credit -= n
            last = not pending and not stream.send_open
            self._out.append(HEADER.pack(FrameType.DATA, Flag.FIN if last else 0, sid, n))
            self._out.append(chunk)
            self._out_size += HEADER_SIZE + n
            if last:
                stream.fin_sent = True
        if not pending:
            if not stream.send_open and not stream.fin_sent:
                self._queue(FrameType.DATA, Flag.FIN, sid, b"")
                stream.fin_sent = True
            if stream.blocked:
                stream.blocked = False
                self._events.append(StreamDrained(sid))
            self._maybe_remove(stream)

    def _sendable(self, stream_id: int) -> _Stream:
        self._require_open()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise InvalidState(f"stream {stream_id} is not open")
        if not stream.send_open:
            raise InvalidState(f"stream {stream_id} already ended its sending side")
        return stream

    def _maybe_remove(self, stream: _Stream) -> None:
        if stream.fin_sent and not stream.recv_open and stream.id in self._streams:
            self._remove(stream)

    def _remove(self, stream: _Stream) -> None:
        del self._streams[stream.id]
        self._recv_windows -= stream.recv.size
        if stream.id % 2 == self._own_parity:
            self._own_opened -= 1
        else:
            self._peer_opened -= 1

    def _require_open(self) -> None:
        if self.state is not State.OPEN:
            raise InvalidState(f"the session is {self.state.value}, not open")

    def _queue(self, type_: FrameType, flags: int, sid: int, payload: bytes) -> None:
        self._out.append(HEADER.pack(type_, flags, sid, len(payload)))
        self._out_size += HEADER_SIZE + len(payload)
        if payload:
            self._out.append(payload)

    def _fail(self, exc: ProtocolError) -> None:
        self.error = exc
        self._queue(
            FrameType.GOAWAY, 0, 0, frames.encode_goaway(self._last_peer_id, exc.code, str(exc))
        )
        self._terminate(exc.code, str(exc), local=True)

    def _terminate(self, code: int, reason: str, local: bool) -> None:
        for stream in list(self._streams.values()):
            self._events.append(StreamReset(stream.id, code))
        self._streams.clear()
        self._own_opened = self._peer_opened = 0
        self.state = State.CLOSED
        self._events.append(ConnectionTerminated(code, reason, local))
