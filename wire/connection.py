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

With the "resume" feature, a Connection outlives its transport (§9)::

    conn.suspend()                         # the transport is gone; streams stay, output is dropped
    ...                                    # streams may still be used: data waits in their queues
    conn.resume()                          # a new transport: send data_to_send() (RESUME) first
    conn.receive_data(...)                 # the peer's RESUME: missing data is re-sent, SessionResumed
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Union

from . import frames, resume
from .codes import ErrorCode
from .events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    PingAcknowledged,
    SessionResumed,
    SessionStarted,
    StreamDrained,
    StreamEnded,
    StreamId,
    StreamOpened,
    StreamReset,
)
from .exceptions import FlowControlError, InvalidState, ProtocolError
from .frames import HEADER, HEADER_SIZE, Flag, FrameType
from .hello import Negotiated, Settings, decode_hello, encode_hello
from .resume import ReplayBuffer, ResumeEntry, decode_resume, encode_resume
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
    SUSPENDED = "suspended"
    """Resume: the transport is gone. Streams live on; nothing is sent."""
    RESUMING = "resuming"
    """Resume: our RESUME is queued on a new transport; the peer's has not arrived."""
    CLOSED = "closed"


_LIVE = (State.OPEN, State.SUSPENDED, State.RESUMING)
_WHILE_RESUMING = (FrameType.RESUME, FrameType.PING, FrameType.GOAWAY)


class _Stream:
    __slots__ = (
        "id", "port", "send", "recv", "send_open", "recv_open",
        "fin_sent", "pending", "blocked", "sent", "received", "replay", "fin_acked", "resume_limit",
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
        self.sent = 0           # DATA bytes sent (the offset of the next byte)
        self.received = 0       # DATA bytes received
        self.replay = ReplayBuffer()  # resume: sent bytes the peer has not confirmed
        self.fin_acked = False  # our direction is finished: FIN sent (and, with resume, confirmed)
        self.resume_limit = recv.size  # resume: the limit our last RESUME announced


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
        self._resume = False       # the "resume" feature is in use
        self._replay_bytes = 0     # held in all replay buffers; sending pauses at session_window
        self._starved: dict[int, _Stream] = {}  # streams whose sending waits for replay room
        self._peer_resume: list[ResumeEntry] = []  # the peer's RESUME, while it arrives
        self._peer_resume_last: int | None = None
        self._queue(FrameType.HELLO, 0, 0, encode_hello(self.settings))

    # ------------------------------------------------------------------ I/O

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes from the network (the payload of one WebSocket message, or any part).

        A peer's protocol violation does not raise: it queues GOAWAY and a
        ``ConnectionTerminated`` event, and later input is ignored.
        """
        if self.state is State.CLOSED or self.state is State.SUSPENDED:
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

    @property
    def resumable(self) -> bool:
        """The session can outlive its transport: "resume" is in use and the session is not over."""
        return self._resume and self.state in _LIVE

    def suspend(self) -> bool:
        """Report that the transport was lost, keeping the streams for :meth:`resume`.

        Unsent output and partial input are dropped (RESUME recovers them). Streams may be
        used meanwhile; what they send waits. Returns False, doing nothing, unless
        :attr:`resumable`: then call :meth:`receive_eof`.
        """
        if not self.resumable:
            return False
        self.state = State.SUSPENDED
        self._in.clear()
        self._out.clear()
        self._out_size = 0
        self._peer_resume = []
        self._peer_resume_last = None
        return True

    def resume(self) -> None:
        """A new transport replaces the lost one: queue our RESUME, to be sent before anything else.

        Raises:
            InvalidState: the connection is not suspended.
        """
        if self.state is not State.SUSPENDED:
            raise InvalidState(f"the session is {self.state.value}, not suspended")
        assert self.negotiated is not None
        self.state = State.RESUMING
        entries = []
        for stream in self._streams.values():
            stream.resume_limit = stream.received + stream.recv.credit
            entries.append(ResumeEntry(stream.id, stream.received, stream.resume_limit,
                                       not stream.recv_open, stream.fin_sent))
        payloads = encode_resume(self._last_peer_id, entries, self.negotiated.peer.max_frame)
        for i, payload in enumerate(payloads):
            self._queue(FrameType.RESUME, Flag.FIN if i == len(payloads) - 1 else 0, 0, payload)

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
        self._require_live()
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
        # Lost with a dropped link, it is sent again: the peer's RESUME still lists the stream (§9.3).
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
            self._queue_window_update(stream, increment)

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

    @property
    def replay_bytes(self) -> int:
        """Bytes held for replay after a transport loss (resume), all streams together."""
        return self._replay_bytes

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
        if self.state is State.RESUMING and type_ not in _WHILE_RESUMING:
            raise ProtocolError(f"{type_.name} before the RESUME record ended")
        if type_ is FrameType.RESUME:
            if self.state is not State.RESUMING:
                raise ProtocolError("RESUME outside a resumption")
            self._on_resume(flags, payload)
            return
        if type_ is FrameType.DATA:
            self._on_data(sid, flags, payload)
        elif type_ is FrameType.WINDOW_UPDATE:
            self._on_window_update(sid, flags, payload)
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
            self._resume = "resume" in self.negotiated.features
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
        stream.received += len(payload)
        if payload:
            self._events.append(DataReceived(stream.id, payload))
        if flags & Flag.FIN:
            stream.recv_open = False
            if self._resume:  # confirm the FIN, so the peer can forget the stream
                self._queue(FrameType.WINDOW_UPDATE, Flag.FIN, sid, resume.encode_window_update(0, stream.received))
            self._events.append(StreamEnded(stream.id))
            self._maybe_remove(stream)
        elif flags & Flag.CONFIRM and self._resume:  # the sender waits for room in its replay buffers
            self._queue(FrameType.WINDOW_UPDATE, 0, sid, resume.encode_window_update(0, stream.received))

    def _on_window_update(self, sid: int, flags: int, payload: bytes) -> None:
        fin = bool(flags & Flag.FIN)
        if self._resume:
            increment, received = resume.decode_window_update(payload)
        elif fin:
            raise ProtocolError("WINDOW_UPDATE with FIN needs the resume feature")
        else:
            increment, received = frames.decode_window_update(payload), -1
        stream = self._lookup(sid, FrameType.WINDOW_UPDATE)
        if stream is None:
            return
        if increment:
            stream.send.grant(increment)
        if received > stream.sent:
            raise ProtocolError(f"WINDOW_UPDATE confirms {received} bytes on stream {sid}; {stream.sent} were sent")
        if received >= 0:
            self._trim(stream, received)
        if fin:
            if not stream.fin_sent:
                raise ProtocolError(f"WINDOW_UPDATE confirms a FIN never sent on stream {sid}")
            self._confirm_fin(stream)
        elif stream.pending:
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

    def _on_resume(self, flags: int, payload: bytes) -> None:
        last, entries = decode_resume(payload)
        if self._peer_resume_last is not None and last != self._peer_resume_last:
            raise ProtocolError("RESUME frames disagree on the last stream id")
        self._peer_resume_last = last
        self._peer_resume += entries
        if len(self._peer_resume) > 2 * (len(self._streams) + self.settings.max_streams):
            raise ProtocolError("RESUME lists more streams than can exist")
        if flags & Flag.FIN:
            entries, self._peer_resume = self._peer_resume, []
            self._peer_resume_last = None
            self._apply_resume(last, entries)

    def _apply_resume(self, peer_last: int, entries: list[ResumeEntry]) -> None:
        """Bring both sides back in step (§9.3): answer streams the peer has and we do not, reset ours
        it lost, re-send OPENs it never saw and every byte or FIN it is missing."""
        assert self.negotiated is not None
        if peer_last and (peer_last % 2 != self._own_parity or peer_last >= self._next_id):
            raise ProtocolError(f"RESUME says stream {peer_last} was seen; it was never opened")
        listed: dict[int, ResumeEntry] = {}
        for entry in entries:
            if entry.stream_id in listed:
                raise ProtocolError(f"RESUME lists stream {entry.stream_id} twice")
            listed[entry.stream_id] = entry
        self.state = State.OPEN
        # Streams paused by the replay cap restart in the replay loop below, after their own replay:
        # flushing them as the trims free room would send new bytes ahead of the missing ones.
        self._starved.clear()
        replays: list[_Stream] = []
        for sid in sorted(listed):
            entry = listed[sid]
            mine = sid % 2 == self._own_parity
            if mine and sid > peer_last:
                raise ProtocolError(f"RESUME lists stream {sid}, above the last it says it saw")
            if not mine and sid > self._last_peer_id:
                continue  # we never saw its OPEN: the peer sends it again
            stream = self._streams.get(sid)
            if stream is None:  # gone here: its end (FIN-ack or RESET) was lost with the transport
                if entry.fin_received and entry.fin_sent:
                    self._queue(FrameType.WINDOW_UPDATE, Flag.FIN, sid, resume.encode_window_update(0, 0))
                else:
                    self._queue(FrameType.RESET, 0, sid, frames.encode_u32(ErrorCode.CANCEL))
                continue
            if entry.fin_received and not stream.fin_sent:
                raise ProtocolError(f"RESUME confirms a FIN never sent on stream {sid}")
            if not stream.replay.start <= entry.received <= stream.sent:
                raise ProtocolError(f"RESUME asks stream {sid} from byte {entry.received}; "
                                    f"{stream.replay.start} to {stream.sent} can be sent")
            credit = entry.limit - stream.sent
            if not 0 <= credit <= frames.MAX_WINDOW:
                raise FlowControlError(f"RESUME limit {entry.limit} on stream {sid} is not within a window "
                                       f"of the {stream.sent} bytes sent")
            self._trim(stream, entry.received)
            stream.send.credit = credit
            if entry.fin_received:
                self._confirm_fin(stream)
                if sid not in self._streams:
                    continue
            replays.append(stream)
        lost = 0
        for stream in sorted(self._streams.values(), key=lambda s: s.id):
            if stream.id in listed:
                continue
            if stream.id % 2 == self._own_parity and stream.id > peer_last:
                # The peer never saw this stream's OPEN (or it was opened while suspended).
                self._queue(FrameType.OPEN, 0, stream.id, frames.encode_open(stream.port))
                stream.send.credit = self.negotiated.peer.initial_window - stream.sent
                replays.append(stream)
            elif stream.fin_sent and not stream.recv_open:
                self._confirm_fin(stream)  # finished on both sides; only its FIN-ack was lost
            else:
                self._remove(stream)
                self._events.append(StreamReset(stream.id, ErrorCode.CANCEL))
                lost += 1
        replayed = 0
        max_frame = self.negotiated.peer.max_frame
        for stream in sorted(replays, key=lambda s: s.id):
            if stream.id not in self._streams:
                continue
            fin = stream.fin_sent and not stream.fin_acked
            full = self._replay_bytes >= self.settings.session_window  # then ask for a confirmation
            chunks = list(stream.replay.chunks(max_frame))
            for i, chunk in enumerate(chunks):
                final = i == len(chunks) - 1
                flags = Flag.FIN if fin and final else Flag.CONFIRM if full and final else 0
                self._queue(FrameType.DATA, flags, stream.id, chunk)
                replayed += len(chunk)
            if fin and not chunks:
                self._queue(FrameType.DATA, Flag.FIN, stream.id, b"")
            grown = stream.received + stream.recv.credit - stream.resume_limit
            if grown > 0 and stream.recv_open:  # credit granted after our RESUME was built
                self._queue_window_update(stream, grown)
            self._flush(stream)  # what waited in the queue, a FIN ended while suspended, StreamDrained
        self._events.append(SessionResumed(len(self._streams), replayed, lost))

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
        """Send as much queued data as the window allows; then FIN if due. Only while OPEN: when
        suspended, data waits in the queue."""
        if self.state is not State.OPEN:
            return
        assert self.negotiated is not None
        max_frame = self.negotiated.peer.max_frame
        pending = stream.pending
        window = stream.send
        sid = stream.id
        keep = self._resume
        room = self.settings.session_window - self._replay_bytes if keep else window.credit
        while pending and window.credit > 0 and room > 0:
            chunk = pending[0]
            n = min(len(chunk), window.credit, max_frame, room)
            if n == len(chunk):
                pending.popleft()
            else:
                pending[0] = chunk[n:]
                chunk = chunk[:n]
            window.credit -= n
            stream.sent += n
            if keep:
                stream.replay.append(chunk)
                self._replay_bytes += n
                room -= n
            last = not pending and not stream.send_open
            flags = Flag.FIN if last else 0
            if keep and room <= 0 and not last:
                flags |= Flag.CONFIRM  # the replay buffers are full: ask the peer what arrived
            self._out.append(HEADER.pack(FrameType.DATA, flags, sid, n))
            self._out.append(chunk)
            self._out_size += HEADER_SIZE + n
            if last:
                self._fin_went_out(stream)
        if pending and window.credit > 0 and keep:
            self._starved[sid] = stream  # the replay buffers are full: wait for confirmations
        if not pending:
            if not stream.send_open and not stream.fin_sent:
                self._queue(FrameType.DATA, Flag.FIN, sid, b"")
                self._fin_went_out(stream)
            if stream.blocked:
                stream.blocked = False
                self._events.append(StreamDrained(sid))
            self._maybe_remove(stream)

    def _sendable(self, stream_id: int) -> _Stream:
        self._require_live()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise InvalidState(f"stream {stream_id} is not open")
        if not stream.send_open:
            raise InvalidState(f"stream {stream_id} already ended its sending side")
        return stream

    def _fin_went_out(self, stream: _Stream) -> None:
        stream.fin_sent = True
        if not self._resume:
            stream.fin_acked = True  # without resume, nothing is kept once sent

    def _confirm_fin(self, stream: _Stream) -> None:
        """The peer has our FIN and everything before it."""
        stream.fin_acked = True
        self._trim(stream, stream.sent)
        self._maybe_remove(stream)

    def _trim(self, stream: _Stream, received: int) -> None:
        """The peer confirmed ``received`` bytes of the stream: forget them; unblock starved streams."""
        freed = stream.replay.trim(received)
        if freed:
            self._replay_bytes -= freed
            if self._starved:
                starved, self._starved = self._starved, {}
                for other in starved.values():
                    if other.id in self._streams:
                        self._flush(other)

    def _queue_window_update(self, stream: _Stream, increment: int) -> None:
        if self._resume:
            payload = resume.encode_window_update(increment, stream.received)
        else:
            payload = frames.encode_u32(increment)
        self._queue(FrameType.WINDOW_UPDATE, 0, stream.id, payload)

    def _maybe_remove(self, stream: _Stream) -> None:
        if stream.fin_acked and not stream.recv_open and stream.id in self._streams:
            self._remove(stream)

    def _remove(self, stream: _Stream) -> None:
        del self._streams[stream.id]
        self._replay_bytes -= len(stream.replay)
        self._starved.pop(stream.id, None)
        self._recv_windows -= stream.recv.size
        if stream.id % 2 == self._own_parity:
            self._own_opened -= 1
        else:
            self._peer_opened -= 1

    def _require_live(self) -> None:
        """Streams may be used: the session is open, or suspended/resuming (their output waits)."""
        if self.state not in _LIVE:
            raise InvalidState(f"the session is {self.state.value}, not open")

    def _queue(self, type_: FrameType, flags: int, sid: int, payload: Buffer) -> None:
        if self.state is State.SUSPENDED or (self.state is State.RESUMING and type_ not in _WHILE_RESUMING):
            return  # no transport, or not yet in sync: RESUME rebuilds what matters (§9)
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
        self._replay_bytes = 0
        self._starved.clear()
        self.state = State.CLOSED
        self._events.append(ConnectionTerminated(code, reason, local))
