"""Wire frames built and taken apart by hand, for tests that speak the protocol without a Connection."""

from __future__ import annotations

from dataclasses import dataclass

from batchtunnel.wire.frames import HEADER, FrameType, encode_open


@dataclass(frozen=True)
class Frame:
    """One frame: ``payload`` is its raw payload."""

    type: int
    flags: int
    stream_id: int
    payload: bytes


def frame(type_: FrameType, stream_id: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """The bytes of one frame."""
    return HEADER.pack(type_, flags, stream_id, len(payload)) + payload


def serialize(f: Frame) -> bytes:
    return frame(FrameType(f.type), f.stream_id, f.payload, f.flags)


def open_frame(stream_id: int, port: int) -> bytes:
    return frame(FrameType.OPEN, stream_id, encode_open(port))


def data_frame(stream_id: int, payload: bytes, fin: bool = False) -> bytes:
    return frame(FrameType.DATA, stream_id, payload, 1 if fin else 0)


def ping_frame(payload: bytes = b"12345678") -> bytes:
    return frame(FrameType.PING, 0, payload)


def parse(data: bytearray) -> list[Frame]:
    """Take the whole frames off the front of ``data`` (a frame may span WebSocket messages)."""
    frames, offset = [], 0
    while offset + HEADER.size <= len(data):
        type_, flags, sid, length = HEADER.unpack_from(data, offset)
        if offset + HEADER.size + length > len(data):
            break
        start = offset + HEADER.size
        frames.append(Frame(type_, flags, sid, bytes(data[start:start + length])))
        offset = start + length
    del data[:offset]
    return frames
