"""Frames queued for the peer, until ``Connection.data_to_send`` takes them."""

from __future__ import annotations

from typing import Union

from .frames import HEADER, HEADER_SIZE, FrameType

Buffer = Union[bytes, bytearray, memoryview]


class Output:
    """Queued frames as a list of buffers: a DATA payload is referenced, not copied, until taken.

    ``allowed`` is set from the connection state's row of ``states.SENDS``; a frame of another type
    is dropped when queued (no transport, or the RESUME record must go first). ``control`` counts the
    bytes of the frames other than DATA among them: what the connection owes the peer besides data,
    which bounds how much input it may still process (``Connection.input_paused``).
    """

    __slots__ = ("_parts", "size", "control", "allowed")

    def __init__(self, allowed: frozenset[FrameType]) -> None:
        self._parts: list[Buffer] = []
        self.size = 0
        self.control = 0
        self.allowed = allowed

    def frame(self, type_: FrameType, flags: int, stream_id: int, payload: Buffer = b"") -> None:
        """Queue one frame, if the state allows its type."""
        if type_ not in self.allowed:
            return
        self._parts.append(HEADER.pack(type_, flags, stream_id, len(payload)))
        self.size += HEADER_SIZE + len(payload)
        if type_ is not FrameType.DATA:
            self.control += HEADER_SIZE + len(payload)
        if payload:
            self._parts.append(payload)

    def take(self) -> bytes:
        """Everything queued, as one buffer; the queue is then empty."""
        if not self._parts:
            return b""
        out = b"".join(self._parts)
        self.drop()
        return out

    def drop(self) -> None:
        """Forget everything queued (the transport is gone)."""
        self._parts.clear()
        self.size = self.control = 0
