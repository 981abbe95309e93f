"""Resumption: streams outlive a replaced transport (docs/protocol.md §9). The RESUME record and its rules.

With the "resume" feature, each side keeps, per stream, the bytes it sent that the peer has not yet
confirmed (``replay.ReplayBuffer``); WINDOW_UPDATE carries the receiver's cumulative received
offset, which trims it. When the transport is replaced, each side sends RESUME: for every stream it
still has, how much it received and how far the peer may send. Each side then re-sends what the
other is missing (:class:`Resumption`).

RESUME payload (big-endian)::

    u32 last_peer_id                  highest stream id of the *receiver's* side seen by the sender
    then entries of 21 bytes each:
    u32 stream_id | u64 received | u64 limit | u8 flags (0x1 FIN received, 0x2 FIN sent)

A RESUME too long for one frame is split; the last frame carries the FIN flag.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .codes import ErrorCode
from .events import Event, SessionResumed, StreamReset
from .exceptions import FlowControlError, ProtocolError
from .frames import (
    MAX_OFFSET,
    MAX_STREAM_ID,
    MAX_WINDOW,
    Flag,
    FrameType,
    encode_open,
    encode_u32,
    encode_window_update_resume,
)
from .output import Output
from .stream import Stream, Streams

_LAST = struct.Struct("!I")
_ENTRY = struct.Struct("!IQQB")

FIN_RECEIVED = 0x1
FIN_SENT = 0x2


@dataclass(frozen=True)
class ResumeEntry:
    """One stream as its sender of RESUME sees it.

    Attributes:
        stream_id: the stream.
        received: DATA bytes received on it (the peer replays from here).
        limit: the offset up to which the peer may send (received + remaining credit).
        fin_received: the peer's FIN arrived.
        fin_sent: our FIN went out (it may be unconfirmed).
    """

    stream_id: int
    received: int
    limit: int
    fin_received: bool
    fin_sent: bool


def encode_resume(last_peer_id: int, entries: list[ResumeEntry], max_payload: int) -> list[bytes]:
    """RESUME payloads, each at most ``max_payload`` bytes; at least one."""
    per_frame = max(1, (max_payload - _LAST.size) // _ENTRY.size)
    payloads = []
    for start in range(0, max(len(entries), 1), per_frame):
        parts = [_LAST.pack(last_peer_id)]
        for e in entries[start:start + per_frame]:
            flags = (FIN_RECEIVED if e.fin_received else 0) | (FIN_SENT if e.fin_sent else 0)
            parts.append(_ENTRY.pack(e.stream_id, e.received, e.limit, flags))
        payloads.append(b"".join(parts))
    return payloads


def decode_resume(payload: bytes) -> tuple[int, list[ResumeEntry]]:
    """Parse one RESUME payload.

    Raises:
        ProtocolError: malformed.
    """
    if len(payload) < _LAST.size or (len(payload) - _LAST.size) % _ENTRY.size:
        raise ProtocolError(f"RESUME payload of {len(payload)} bytes is not 4 + 21 * n")
    (last,) = _LAST.unpack_from(payload)
    if last > MAX_STREAM_ID:
        raise ProtocolError("RESUME last stream id out of range")
    entries = []
    for offset in range(_LAST.size, len(payload), _ENTRY.size):
        sid, received, limit, flags = _ENTRY.unpack_from(payload, offset)
        if not 0 < sid <= MAX_STREAM_ID or flags & ~(FIN_RECEIVED | FIN_SENT):
            raise ProtocolError(f"RESUME entry for stream {sid} with flags 0x{flags:02x} is invalid")
        if not received <= limit <= MAX_OFFSET:
            raise ProtocolError(f"RESUME entry for stream {sid}: limit {limit} below received {received}")
        entries.append(ResumeEntry(sid, received, limit, bool(flags & FIN_RECEIVED), bool(flags & FIN_SENT)))
    return int(last), entries


class Resumption:
    """The resume work of one connection: send our RESUME on a new transport, gather the peer's, then
    bring both sides in step (§9.3). The connection calls it; the streams' state is in ``streams``.
    """

    def __init__(self, streams: Streams, out: Output, events: list[Event]) -> None:
        self.streams = streams
        self.out = out
        self.events = events
        self._peer_entries: list[ResumeEntry] = []  # the peer's RESUME, while it arrives
        self._peer_last: int | None = None

    def forget(self) -> None:
        """The transport was lost: a RESUME record half received is void."""
        self._peer_entries = []
        self._peer_last = None

    def send_record(self) -> None:
        """Queue our RESUME: per stream, what arrived and how far the peer may send."""
        streams = self.streams
        assert streams.peer is not None
        entries = []
        for stream in streams.by_id.values():
            stream.resume_limit = stream.received + stream.recv.credit
            entries.append(ResumeEntry(stream.id, stream.received, stream.resume_limit,
                                       not stream.recv_open, stream.fin_sent))
        payloads = encode_resume(streams.last_peer_id, entries, streams.peer.max_frame)
        for i, payload in enumerate(payloads):
            self.out.frame(FrameType.RESUME, Flag.FIN if i == len(payloads) - 1 else 0, 0, payload)

    def receive(self, flags: int, payload: bytes) -> tuple[int, list[ResumeEntry]] | None:
        """One frame of the peer's RESUME. Returns the whole record once its last frame arrived.

        Raises:
            ProtocolError: malformed, or inconsistent with what came before.
        """
        last, entries = decode_resume(payload)
        if self._peer_last is not None and last != self._peer_last:
            raise ProtocolError("RESUME frames disagree on the last stream id")
        self._peer_last = last
        self._peer_entries += entries
        if len(self._peer_entries) > 2 * (len(self.streams.by_id) + self.streams.settings.max_streams):
            raise ProtocolError("RESUME lists more streams than can exist")
        if not flags & Flag.FIN:
            return None
        entries = self._peer_entries
        self.forget()
        return last, entries

    def apply(self, peer_last: int, entries: list[ResumeEntry]) -> SessionResumed:
        """Bring both sides in step (§9.3): answer streams the peer has and we do not, reset ours it lost,
        re-send OPENs it never saw and every byte or FIN it is missing. The connection is OPEN again.

        Raises:
            ProtocolError: the record contradicts what we sent or saw.
        """
        streams = self.streams
        if peer_last and (not streams.mine(peer_last) or peer_last >= streams.next_id):
            raise ProtocolError(f"RESUME says stream {peer_last} was seen; it was never opened")
        listed: dict[int, ResumeEntry] = {}
        for entry in entries:
            if entry.stream_id in listed:
                raise ProtocolError(f"RESUME lists stream {entry.stream_id} twice")
            listed[entry.stream_id] = entry
        # Streams paused by the replay cap restart in the replay loop below, after their own replay:
        # flushing them as the trims free room would send new bytes ahead of the missing ones.
        streams.starved.clear()
        replays = [stream for sid in sorted(listed)
                   if (stream := self._resync(sid, listed[sid], peer_last)) is not None]
        lost = 0
        for stream in sorted(streams, key=lambda s: s.id):
            if stream.id in listed:
                continue
            if streams.mine(stream.id) and stream.id > peer_last:
                # The peer never saw this stream's OPEN (or it was opened while suspended).
                assert streams.peer is not None
                self.out.frame(FrameType.OPEN, 0, stream.id, encode_open(stream.port))
                stream.send.credit = streams.peer.initial_window - stream.sent
                replays.append(stream)
            elif stream.fin_sent and not stream.recv_open:
                streams.confirm_fin(stream)  # finished on both sides; only its FIN-ack was lost
            else:
                streams.remove(stream)
                self.events.append(StreamReset(stream.id, ErrorCode.CANCEL))
                lost += 1
        replayed = sum(self._replay(stream) for stream in sorted(replays, key=lambda s: s.id))
        return SessionResumed(len(streams.by_id), replayed, lost)

    def _resync(self, sid: int, entry: ResumeEntry, peer_last: int) -> Stream | None:
        """A stream the peer listed: check its entry, forget what it confirms, take its credit. Returns
        the stream if it has something to re-send."""
        streams = self.streams
        mine = streams.mine(sid)
        if mine and sid > peer_last:
            raise ProtocolError(f"RESUME lists stream {sid}, above the last it says it saw")
        if not mine and sid > streams.last_peer_id:
            return None  # we never saw its OPEN: the peer sends it again
        stream = streams.by_id.get(sid)
        if stream is None:  # gone here: its end (FIN-ack or RESET) was lost with the transport
            if entry.fin_received and entry.fin_sent:
                self.out.frame(FrameType.WINDOW_UPDATE, Flag.FIN, sid, encode_window_update_resume(0, 0))
            else:
                self.out.frame(FrameType.RESET, 0, sid, encode_u32(ErrorCode.CANCEL))
            return None
        if entry.fin_received and not stream.fin_sent:
            raise ProtocolError(f"RESUME confirms a FIN never sent on stream {sid}")
        if not stream.replay.start <= entry.received <= stream.sent:
            raise ProtocolError(f"RESUME asks stream {sid} from byte {entry.received}; "
                                f"{stream.replay.start} to {stream.sent} can be sent")
        credit = entry.limit - stream.sent
        if not 0 <= credit <= MAX_WINDOW:
            raise FlowControlError(f"RESUME limit {entry.limit} on stream {sid} is not within a window "
                                   f"of the {stream.sent} bytes sent")
        streams.trim(stream, entry.received)
        stream.send.credit = credit
        if entry.fin_received:
            streams.confirm_fin(stream)
            if sid not in streams.by_id:
                return None
        return stream

    def _replay(self, stream: Stream) -> int:
        """Re-send what the peer is missing on ``stream``, then carry on; returns the bytes re-sent."""
        streams = self.streams
        if stream.id not in streams.by_id:
            return 0
        assert streams.peer is not None
        fin = stream.fin_sent and not stream.fin_acked
        full = streams.replay_bytes >= streams.settings.session_window  # then ask for a confirmation
        chunks = list(stream.replay.chunks(streams.peer.max_frame))
        replayed = 0
        for i, chunk in enumerate(chunks):
            final = i == len(chunks) - 1
            flags = Flag.FIN if fin and final else Flag.CONFIRM if full and final else 0
            self.out.frame(FrameType.DATA, flags, stream.id, chunk)
            replayed += len(chunk)
        if fin and not chunks:
            self.out.frame(FrameType.DATA, Flag.FIN, stream.id)
        grown = stream.received + stream.recv.credit - stream.resume_limit
        if grown > 0 and stream.recv_open:  # credit granted after our RESUME was built
            streams.window_update(stream, grown)
        streams.flush(stream)  # what waited in the queue, a FIN ended while suspended, StreamDrained
        return replayed
