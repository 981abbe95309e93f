"""Streams: each one's state, the frames the peer sends on it, and its sending (docs/protocol.md §5).

A stream sends DATA while the peer's window allows; the rest waits in ``pending`` until a
WINDOW_UPDATE grants more (the caller then gets ``StreamDrained`` and reads its source again). A
stream is forgotten once both directions ended: our FIN went out (with "resume": and was confirmed)
and the peer's arrived.

With the "resume" feature (§9) a stream also keeps what it sent until the peer confirms it, in a
:class:`ReplayBuffer`; all streams of a connection together keep at most ``session_window`` bytes.
A stream that reaches that cap pauses ("starved") and asks the peer for a confirmation (the CONFIRM
flag); each confirmation trims the buffers and restarts the starved streams.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from .codes import ErrorCode
from .events import DataReceived, Event, StreamDrained, StreamEnded, StreamId, StreamOpened, StreamReset
from .exceptions import InvalidState, ProtocolError
from .frames import (
    MAX_STREAM_ID,
    Flag,
    FrameType,
    decode_window_update,
    decode_window_update_resume,
    encode_u32,
    encode_window_update_resume,
)
from .hello import Settings
from .output import Output
from .replay import ReplayBuffer
from .windows import ReceiveWindow, SendWindow

NEW_STREAM_SHARE = 4
"""Window growth stops ``1 / NEW_STREAM_SHARE`` of the session budget short of it (docs/protocol.md §5.3)."""


class Stream:
    """One stream's state. Offsets count DATA bytes from the stream's start."""

    __slots__ = (
        "id", "port", "send", "recv", "send_open", "recv_open", "fin_sent", "fin_acked",
        "pending", "blocked", "sent", "received", "replay", "resume_limit",
    )

    def __init__(self, stream_id: StreamId, port: int, send: SendWindow, recv: ReceiveWindow) -> None:
        self.id = stream_id
        self.port = port
        self.send = send
        self.recv = recv
        self.send_open = True   # we may still send data
        self.recv_open = True   # the peer may still send data
        self.fin_sent = False
        self.fin_acked = False  # our direction is finished: FIN sent (and, with resume, confirmed)
        self.pending: deque[memoryview] = deque()  # data waiting for credit
        self.blocked = False    # send_data returned False; owe a StreamDrained
        self.sent = 0           # the offset of the next byte we send
        self.received = 0       # bytes received
        self.replay = ReplayBuffer()  # resume: sent bytes the peer has not confirmed
        self.resume_limit = recv.size  # resume: the limit our last RESUME announced


class Streams:
    """The live streams of one connection: the ids and limits they share, their frames, their sending.

    Frames go to ``out``; ``StreamDrained`` events to ``events``. The connection sets ``sending``
    (True only while OPEN: otherwise data waits in the streams' queues), ``peer`` once the HELLOs
    are exchanged, and ``keep`` when "resume" is in use.

    Args:
        own_parity: 1 if we open odd stream ids (the broker), 0 for even ones (the agent).
        settings: our limits, which bound what the peer may open and send.
    """

    def __init__(self, own_parity: int, settings: Settings, out: Output, events: list[Event]) -> None:
        self.by_id: dict[int, Stream] = {}
        self.own_parity = own_parity
        self.settings = settings
        self.out = out
        self.events = events
        self.peer: Settings | None = None
        self.sending = False
        self.keep = False
        self.next_id = 1 if own_parity else 2
        self.last_peer_id = 0
        self.own_opened = 0      # live streams we opened
        self.peer_opened = 0     # live streams the peer opened
        self.recv_windows = 0    # sum of the live streams' receive windows (the session budget)
        self.replay_bytes = 0    # held in all replay buffers; sending pauses at session_window
        # What window growth may use of the budget; the rest is kept for new streams.
        self.growth_limit = settings.session_window - settings.session_window // NEW_STREAM_SHARE
        self.starved: dict[int, Stream] = {}  # streams whose sending waits for replay room

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self.by_id.values()))

    def mine(self, stream_id: int) -> bool:
        return stream_id % 2 == self.own_parity

    # -------------------------------------------------------- open and close

    def new(self, stream_id: int, port: int) -> Stream:
        """A stream we open (the caller allocated ``next_id``) or the peer opened."""
        assert self.peer is not None
        stream = Stream(StreamId(stream_id), port, SendWindow(self.peer.initial_window),
                        ReceiveWindow(self.settings.initial_window, self.settings.max_window))
        self.by_id[stream_id] = stream
        self.recv_windows += stream.recv.size
        if self.mine(stream_id):
            self.own_opened += 1
        else:
            self.peer_opened += 1
        return stream

    def allocate_id(self) -> int:
        """The id of the next stream we open.

        Raises:
            InvalidState: every id was used; open a new session.
        """
        sid = self.next_id
        if sid > MAX_STREAM_ID:
            raise InvalidState("stream ids exhausted; open a new session")
        self.next_id += 2
        return sid

    def over_budget(self) -> bool:
        """A new stream's receive window would pass the session's budget."""
        return self.recv_windows + self.settings.initial_window > self.settings.session_window

    def growth_headroom(self) -> int:
        """How much auto-tuning may still grow the receive windows: the budget less the share of it
        kept for new streams (a quarter: 64 initial windows by default), so that bulk streams that
        grew to their ceiling never leave a notebook unable to open its next connection."""
        return self.growth_limit - self.recv_windows

    def lookup(self, stream_id: int, type_: FrameType) -> Stream | None:
        """The live stream; None if it existed and is closed (frames racing a reset are ignored).

        Raises:
            ProtocolError: ``stream_id`` was never opened.
        """
        stream = self.by_id.get(stream_id)
        if stream is not None:
            return stream
        opened = stream_id < self.next_id if self.mine(stream_id) else stream_id <= self.last_peer_id
        if not opened:
            raise ProtocolError(f"{type_.name} on stream {stream_id}, which was never opened")
        return None

    def reset(self, stream: Stream, code: int = ErrorCode.CANCEL) -> None:
        """Forget ``stream`` and tell the peer (a RESET lost with the transport is sent again, §9.3)."""
        self.remove(stream)
        self.out.frame(FrameType.RESET, 0, stream.id, encode_u32(code))

    def remove(self, stream: Stream) -> None:
        del self.by_id[stream.id]
        self.replay_bytes -= len(stream.replay)
        self.starved.pop(stream.id, None)
        self.recv_windows -= stream.recv.size
        if self.mine(stream.id):
            self.own_opened -= 1
        else:
            self.peer_opened -= 1

    def clear(self) -> list[Stream]:
        """Forget every stream (the session ended); returns them."""
        streams = list(self.by_id.values())
        self.by_id.clear()
        self.starved.clear()
        self.own_opened = self.peer_opened = self.replay_bytes = 0
        return streams

    def maybe_remove(self, stream: Stream) -> None:
        """Forget ``stream`` if both directions are finished."""
        if stream.fin_acked and not stream.recv_open and stream.id in self.by_id:
            self.remove(stream)

    # ------------------------------------------------------ frames received

    def on_open(self, sid: int, port: int, accepting: bool) -> None:
        """OPEN from the peer: a new stream, or a RESET REFUSED_STREAM when we are going away
        (``accepting`` False), at the peer's stream limit or at the session's receive budget."""
        if self.mine(sid):
            raise ProtocolError(f"OPEN with stream id {sid}, which belongs to the receiver")
        if sid <= self.last_peer_id:
            raise ProtocolError(f"OPEN with stream id {sid}, not above the last one ({self.last_peer_id})")
        self.last_peer_id = sid
        if not accepting or self.peer_opened >= self.settings.max_streams or self.over_budget():
            self.out.frame(FrameType.RESET, 0, sid, encode_u32(ErrorCode.REFUSED_STREAM))
            return
        self.new(sid, port)
        self.events.append(StreamOpened(StreamId(sid), port))

    def on_data(self, sid: int, flags: int, payload: bytes) -> None:
        """DATA from the peer."""
        stream = self.lookup(sid, FrameType.DATA)
        if stream is None:
            return
        if not stream.recv_open:
            # Data after FIN: a stream error, not a connection error (§5.2).
            self.reset(stream, ErrorCode.STREAM_CLOSED)
            self.events.append(StreamReset(stream.id, ErrorCode.STREAM_CLOSED))
            return
        stream.recv.receive(len(payload))
        stream.received += len(payload)
        if payload:
            self.events.append(DataReceived(stream.id, payload))
        if flags & Flag.FIN:
            stream.recv_open = False
            if self.keep:  # confirm the FIN, so the peer can forget the stream
                self.confirm_received(stream, fin=True)
            self.events.append(StreamEnded(stream.id))
            self.maybe_remove(stream)
        elif flags & Flag.CONFIRM and self.keep:  # the sender waits for room in its replay buffers
            self.confirm_received(stream, fin=False)

    def on_window_update(self, sid: int, flags: int, payload: bytes) -> None:
        """WINDOW_UPDATE from the peer: more credit; with resume, also a confirmation of what arrived."""
        fin = bool(flags & Flag.FIN)
        if self.keep:
            increment, received = decode_window_update_resume(payload)
        elif fin:
            raise ProtocolError("WINDOW_UPDATE with FIN needs the resume feature")
        else:
            increment, received = decode_window_update(payload), -1
        stream = self.lookup(sid, FrameType.WINDOW_UPDATE)
        if stream is None:
            return
        if increment:
            stream.send.grant(increment)
        if received > stream.sent:
            raise ProtocolError(f"WINDOW_UPDATE confirms {received} bytes on stream {sid}; {stream.sent} were sent")
        if received >= 0:
            self.trim(stream, received)
        if fin:
            if not stream.fin_sent:
                raise ProtocolError(f"WINDOW_UPDATE confirms a FIN never sent on stream {sid}")
            self.confirm_fin(stream)
        elif stream.pending:
            self.flush(stream)

    def on_reset(self, sid: int, code: int) -> None:
        """RESET from the peer."""
        stream = self.lookup(sid, FrameType.RESET)
        if stream is None:
            return
        self.remove(stream)
        self.events.append(StreamReset(stream.id, code))

    # ---------------------------------------------------------------- sending

    def flush(self, stream: Stream) -> None:
        """Send as much queued data as the window (and, with resume, the replay cap) allows; then the FIN
        if due. Only while ``sending``: otherwise data waits in the queue."""
        if not self.sending:
            return
        assert self.peer is not None
        max_frame = self.peer.max_frame
        pending = stream.pending
        window = stream.send
        sid = stream.id
        keep = self.keep
        room = self.settings.session_window - self.replay_bytes if keep else window.credit
        out = self.out
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
                self.replay_bytes += n
                room -= n
            last = not pending and not stream.send_open
            flags = Flag.FIN if last else 0
            if keep and room <= 0 and not last:
                flags |= Flag.CONFIRM  # the replay buffers are full: ask the peer what arrived
            out.frame(FrameType.DATA, flags, sid, chunk)
            if last:
                self.fin_went_out(stream)
        if pending and window.credit > 0 and keep:
            self.starved[sid] = stream  # the replay buffers are full: wait for confirmations
        if not pending:
            if not stream.send_open and not stream.fin_sent:
                out.frame(FrameType.DATA, Flag.FIN, sid)
                self.fin_went_out(stream)
            if stream.blocked:
                stream.blocked = False
                self.events.append(StreamDrained(stream.id))
            self.maybe_remove(stream)

    def fin_went_out(self, stream: Stream) -> None:
        stream.fin_sent = True
        if not self.keep:
            stream.fin_acked = True  # without resume, nothing is kept once sent

    def confirm_fin(self, stream: Stream) -> None:
        """The peer has our FIN and everything before it."""
        stream.fin_acked = True
        self.trim(stream, stream.sent)
        self.maybe_remove(stream)

    def trim(self, stream: Stream, received: int) -> None:
        """The peer confirmed ``received`` bytes of the stream: forget them; restart starved streams."""
        freed = stream.replay.trim(received)
        if freed:
            self.replay_bytes -= freed
            if self.starved:
                starved, self.starved = self.starved, {}
                for other in starved.values():
                    if other.id in self.by_id:
                        self.flush(other)

    def window_update(self, stream: Stream, increment: int) -> None:
        """Grant the peer ``increment`` more bytes (with resume, the update also confirms what arrived)."""
        if self.keep:
            payload = encode_window_update_resume(increment, stream.received)
        else:
            payload = encode_u32(increment)
        self.out.frame(FrameType.WINDOW_UPDATE, 0, stream.id, payload)

    def confirm_received(self, stream: Stream, fin: bool) -> None:
        """Resume: tell the peer how much arrived (and, with ``fin``, that its FIN did), granting nothing."""
        self.out.frame(FrameType.WINDOW_UPDATE, Flag.FIN if fin else 0, stream.id,
                       encode_window_update_resume(0, stream.received))
