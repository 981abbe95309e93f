"""The tunnel protocol's connection: bytes in, events out (docs/protocol.md).

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

With the "resume" feature, a Connection outlives its transport (§9)::

    conn.suspend()                         # the transport is gone; streams stay, output is dropped
    ...                                    # streams may still be used: data waits in their queues
    conn.resume()                          # a new transport: send data_to_send() (RESUME) first
    conn.receive_data(...)                 # the peer's RESUME: missing data is re-sent, SessionResumed

This module parses frames, handles the connection's own (HELLO, PING, GOAWAY, RESUME) and holds
the commands; the rest has its own place: which frame each state accepts (``states``), the streams
with their frames (OPEN, DATA, WINDOW_UPDATE, RESET) and sending (``stream``), flow-control arithmetic (``windows``),
resumption (``resume``, ``replay``), payload codecs (``frames``, ``hello``).
"""

from __future__ import annotations

import enum

from . import frames
from .codes import ErrorCode
from .events import (
    ConnectionTerminated,
    Event,
    GoAwayReceived,
    PingAcknowledged,
    SessionStarted,
    StreamId,
    StreamReset,
)
from .exceptions import InvalidState, ProtocolError
from .frames import HEADER, HEADER_SIZE, Flag, FrameType
from .hello import Negotiated, Settings, decode_hello, encode_hello
from .output import Buffer, Output
from .resume import Resumption
from .states import LIVE, PARSES, SENDS, State, check_received
from .stream import Stream, Streams

MAX_CONTROL_BACKLOG = 64 * 1024
"""Bytes of control frames (all but DATA) waiting to be sent above which no more input is processed
(§7.1): a peer that keeps sending PINGs, OPENs to refuse or FINs to confirm, but never reads the
answers, stalls only its own session instead of growing our memory. Legitimate peers owe a few
hundred bytes at most; DATA is bounded by flow control instead."""


class Side(enum.Enum):
    """Which end of the tunnel this is. The broker opens odd stream ids, the agent even ones."""

    BROKER = "broker"
    AGENT = "agent"


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
        self._in = bytearray()
        self._out = Output(SENDS[State.HANDSHAKE])
        self._events: list[Event] = []
        self._streams = Streams(1 if side is Side.BROKER else 0, self.settings, self._out, self._events)
        self._resumption = Resumption(self._streams, self._out, self._events)
        self._goaway_sent_last: int | None = None
        self._goaway_received_last: int | None = None
        self._out.frame(FrameType.HELLO, 0, 0, encode_hello(self.settings))

    # ------------------------------------------------------------------ I/O

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes from the network (the payload of one WebSocket message, or any part).

        A peer's protocol violation does not raise: it queues GOAWAY and a
        ``ConnectionTerminated`` event, and later input is ignored. Input that cannot be processed
        yet (:attr:`input_paused`) is held.
        """
        if self.state not in PARSES:
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
        events = self._events[:]
        self._events.clear()
        return events

    def data_to_send(self) -> bytes:
        """Return the bytes to send to the peer, and forget them. May be empty."""
        return self._out.take()

    @property
    def bytes_to_send(self) -> int:
        """How many bytes :meth:`data_to_send` would return now (for backpressure)."""
        return self._out.size

    @property
    def input_paused(self) -> bool:
        """No more input is processed until the output is taken: the control frames we owe the peer
        reach MAX_CONTROL_BACKLOG. Stop reading the transport; once it takes :meth:`data_to_send`
        again, call ``receive_data(b"")`` to process what was held, and read again unless still paused.
        """
        return self._out.control >= MAX_CONTROL_BACKLOG

    # ----------------------------------------------------------- resumption

    @property
    def resumable(self) -> bool:
        """The session can outlive its transport: "resume" is in use and the session is not over."""
        return self._streams.keep and self.state in LIVE

    def suspend(self) -> bool:
        """Report that the transport was lost, keeping the streams for :meth:`resume`.

        Unsent output and partial input are dropped (RESUME recovers them). Streams may be
        used meanwhile; what they send waits. Returns False, doing nothing, unless
        :attr:`resumable`: then call :meth:`receive_eof`.
        """
        if not self.resumable:
            return False
        self._set_state(State.SUSPENDED)
        self._in.clear()
        self._out.drop()
        self._resumption.forget()
        return True

    def resume(self) -> None:
        """A new transport replaces the lost one: queue our RESUME, to be sent before anything else.

        Raises:
            InvalidState: the connection is not suspended.
        """
        if self.state is not State.SUSPENDED:
            raise InvalidState(f"the session is {self.state.value}, not suspended")
        self._set_state(State.RESUMING)
        self._resumption.send_record()

    # ------------------------------------------------------------- commands

    def open_stream(self, port: int) -> StreamId:
        """Open a stream towards ``port`` on the peer's side.

        Raises:
            InvalidState: the session is not open, the peer is going away, or
                the peer's stream limit is reached.
        """
        self._require_live()
        streams = self._streams
        if self._goaway_received_last is not None:
            raise InvalidState("the peer is going away; it accepts no new streams")
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        assert streams.peer is not None
        if streams.own_opened >= streams.peer.max_streams:
            raise InvalidState(f"the peer accepts at most {streams.peer.max_streams} streams")
        if streams.over_budget():
            raise InvalidState(f"the session's receive windows reach its budget ({self.settings.session_window})")
        stream = streams.new(streams.allocate_id(), port)
        self._out.frame(FrameType.OPEN, 0, stream.id, frames.encode_open(port))
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
        self._streams.flush(stream)
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
        stream = self._streams.by_id.get(stream_id)
        if stream is not None and self.state is not State.CLOSED:
            self._streams.reset(stream, code)

    def acknowledge_received(self, stream_id: int, length: int) -> None:
        """Report that ``length`` bytes of a stream's data were delivered locally.

        This is what grants the peer more credit: call it only once the data has
        left our hands (written to the local socket without backing up).
        """
        streams = self._streams
        stream = streams.by_id.get(stream_id)
        if stream is None or not stream.recv_open or self.state is State.CLOSED:
            return
        before = stream.recv.size
        increment = stream.recv.acknowledge(length, streams.growth_headroom())
        streams.recv_windows += stream.recv.size - before
        if increment:
            streams.window_update(stream, increment)

    def ping(self, payload: bytes) -> None:
        """Send a heartbeat PING. ``payload`` is 8 bytes, echoed in ``PingAcknowledged``."""
        if len(payload) != 8:
            raise ValueError("PING payload must be 8 bytes")
        self._out.frame(FrameType.PING, 0, 0, payload)

    def go_away(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Tell the peer we accept no new streams.

        With NO_ERROR, open streams carry on. With any other code the session
        ends: streams are reset and ``ConnectionTerminated`` is queued; then
        send the remaining data and close the transport.
        """
        if self.state is State.CLOSED:
            return
        last = self._streams.last_peer_id
        self._goaway_sent_last = last
        self._out.frame(FrameType.GOAWAY, 0, 0, frames.encode_goaway(last, code, reason))
        if code != ErrorCode.NO_ERROR:
            self._terminate(code, reason, local=True)

    # ---------------------------------------------------------- inspection

    def stream_ids(self) -> list[StreamId]:
        """The live streams, in opening order."""
        return [stream.id for stream in self._streams.by_id.values()]

    def send_credit(self, stream_id: int) -> int:
        """Bytes we may still send on a stream before the peer grants more."""
        return self._streams.by_id[stream_id].send.credit

    def buffered(self, stream_id: int) -> int:
        """Bytes queued on a stream waiting for credit."""
        return sum(len(chunk) for chunk in self._streams.by_id[stream_id].pending)

    @property
    def replay_bytes(self) -> int:
        """Bytes held for replay after a transport loss (resume), all streams together."""
        return self._streams.replay_bytes

    @property
    def receive_windows(self) -> int:
        """What the peer may have in flight towards us, all streams together: at most
        ``settings.session_window``."""
        return self._streams.recv_windows

    # ------------------------------------------------------------- parsing

    def _parse(self, buf: Buffer) -> int:
        """Handle every whole frame in ``buf``; return how many bytes were consumed."""
        pos = 0
        end = len(buf)
        max_payload = self.settings.max_frame
        try:
            with memoryview(buf) as view:
                while end - pos >= HEADER_SIZE and self._out.control < MAX_CONTROL_BACKLOG:
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
        if type_ is FrameType.DATA and self.state is State.OPEN:  # the hot path: skip the table
            self._streams.on_data(sid, flags, payload)
            return
        check_received(self.state, type_)
        if type_ is FrameType.DATA:
            self._streams.on_data(sid, flags, payload)
        elif type_ is FrameType.WINDOW_UPDATE:
            self._streams.on_window_update(sid, flags, payload)
        elif type_ is FrameType.OPEN:
            self._streams.on_open(sid, frames.decode_open(payload), accepting=self._goaway_sent_last is None)
        elif type_ is FrameType.RESET:
            self._streams.on_reset(sid, frames.decode_reset(payload))
        elif type_ is FrameType.PING:
            frames.decode_ping(payload)
            if flags & Flag.ACK:
                self._events.append(PingAcknowledged(payload))
            else:
                self._out.frame(FrameType.PING, Flag.ACK, 0, payload)
        elif type_ is FrameType.GOAWAY:
            self._on_goaway(*frames.decode_goaway(payload))
        elif type_ is FrameType.RESUME:
            record = self._resumption.receive(flags, payload)
            if record is not None:
                self._set_state(State.OPEN)
                self._events.append(self._resumption.apply(*record))
        else:
            self._on_hello(payload)

    def _on_hello(self, payload: bytes) -> None:
        self.negotiated = decode_hello(payload, self.settings)
        self._streams.peer = self.negotiated.peer
        self._streams.keep = "resume" in self.negotiated.features
        self._set_state(State.OPEN)
        self._events.append(SessionStarted(self.negotiated))

    def _on_goaway(self, last: int, code: int, reason: str) -> None:
        self._goaway_received_last = last
        self._events.append(GoAwayReceived(last, code, reason))
        if code != ErrorCode.NO_ERROR:
            self._terminate(code, reason, local=False)
            return
        for stream in self._streams:
            if self._streams.mine(stream.id) and stream.id > last:
                self._streams.remove(stream)
                self._events.append(StreamReset(stream.id, ErrorCode.REFUSED_STREAM))

    # ----------------------------------------------------------- internals

    def _set_state(self, state: State) -> None:
        """Every state change goes through here: what may be sent follows the state (``states``)."""
        self.state = state
        self._out.allowed = SENDS[state]
        self._streams.sending = state is State.OPEN

    def _sendable(self, stream_id: int) -> Stream:
        self._require_live()
        stream = self._streams.by_id.get(stream_id)
        if stream is None:
            raise InvalidState(f"stream {stream_id} is not open")
        if not stream.send_open:
            raise InvalidState(f"stream {stream_id} already ended its sending side")
        return stream

    def _require_live(self) -> None:
        """Streams may be used: the session is open, or suspended/resuming (their output waits)."""
        if self.state not in LIVE:
            raise InvalidState(f"the session is {self.state.value}, not open")

    def _fail(self, exc: ProtocolError) -> None:
        self.error = exc
        goaway = frames.encode_goaway(self._streams.last_peer_id, exc.code, str(exc))
        self._out.frame(FrameType.GOAWAY, 0, 0, goaway)
        self._terminate(exc.code, str(exc), local=True)

    def _terminate(self, code: int, reason: str, local: bool) -> None:
        for stream in self._streams.clear():
            self._events.append(StreamReset(stream.id, code))
        self._set_state(State.CLOSED)
        self._events.append(ConnectionTerminated(code, reason, local))
