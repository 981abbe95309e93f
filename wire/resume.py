"""What lets streams outlive a transport: replay buffers and the RESUME record (docs/protocol.md §9).

With the "resume" feature, each side keeps, per stream, the bytes it sent that the
peer has not yet confirmed (``ReplayBuffer``); WINDOW_UPDATE carries the receiver's
cumulative received offset, which trims it. When the transport is replaced, each side
sends RESUME: for every stream it still has, how much it received and how far the
peer may send. Each side then re-sends what the other is missing.

RESUME payload (big-endian)::

    u32 last_peer_id                  highest stream id of the *receiver's* side seen by the sender
    then entries of 21 bytes each:
    u32 stream_id | u64 received | u64 limit | u8 flags (0x1 FIN received, 0x2 FIN sent)

A RESUME too long for one frame is split; the last frame carries the FIN flag.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from .exceptions import ProtocolError
from .frames import MAX_STREAM_ID

_LAST = struct.Struct("!I")
_ENTRY = struct.Struct("!IQQB")
_WINDOW_UPDATE = struct.Struct("!IQ")
MAX_OFFSET = 2**63 - 1

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


def encode_window_update(increment: int, received: int) -> bytes:
    """A WINDOW_UPDATE payload under "resume": the increment and the cumulative received offset."""
    return _WINDOW_UPDATE.pack(increment, received)


def decode_window_update(payload: bytes) -> tuple[int, int]:
    """Parse a WINDOW_UPDATE payload under "resume". The increment may be 0: a confirmation only.

    Raises:
        ProtocolError: malformed.
    """
    if len(payload) != _WINDOW_UPDATE.size:
        raise ProtocolError("WINDOW_UPDATE payload must be 12 bytes when resume is in use")
    increment, received = _WINDOW_UPDATE.unpack(payload)
    if increment > 2**31 - 1 or received > MAX_OFFSET:
        raise ProtocolError(f"WINDOW_UPDATE increment {increment} out of range")
    return int(increment), int(received)


class ReplayBuffer:
    """Bytes sent on one stream and not yet confirmed received: the range [start, start + len).

    Holds references to the sent chunks (no copy)."""

    __slots__ = ("start", "_chunks", "_size")

    def __init__(self) -> None:
        self.start = 0
        self._chunks: deque[memoryview] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, chunk: memoryview) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)

    def trim(self, offset: int) -> int:
        """Forget everything below ``offset`` (clamped to what is held). Returns the bytes freed."""
        drop = min(offset - self.start, self._size)
        if drop <= 0:
            return 0
        left = drop
        chunks = self._chunks
        while left:
            head = chunks[0]
            if len(head) <= left:
                chunks.popleft()
                left -= len(head)
            else:
                chunks[0] = head[left:]
                left = 0
        self.start += drop
        self._size -= drop
        return drop

    def chunks(self, max_size: int) -> Iterator[memoryview]:
        """What is held, in order, in pieces of at most ``max_size`` bytes."""
        for chunk in self._chunks:
            for pos in range(0, len(chunk), max_size):
                yield chunk[pos:pos + max_size]
