"""Frame layout, serialisation and parsing (docs/protocol.md §2-§3).

Every frame is a 10-byte header followed by a payload::

    +--------+--------+----------------+----------------+----------------
    | type:8 | flags:8|  stream_id:32  |   length:32    | payload ...
    +--------+--------+----------------+----------------+----------------

Examples (hex)::

    02 01 00000001 00000003 616263   DATA, FIN, stream 1, b"abc"
    01 00 00000001 00000002 2328     OPEN stream 1 towards port 9000
    05 00 00000000 00000008 <8 B>    PING (heartbeat), connection-level
    04 00 00000002 00000004 00040000 WINDOW_UPDATE stream 2, +256 KiB

Frames travel as a byte stream inside binary WebSocket messages; message
boundaries carry no meaning.
"""

from __future__ import annotations

import enum
import struct

from .exceptions import FrameTooLarge, ProtocolError

HEADER = struct.Struct("!BBII")
HEADER_SIZE = HEADER.size  # 10
MAX_STREAM_ID = 2**31 - 1
MAX_WINDOW = 2**31 - 1
MAX_REASON_BYTES = 512
MAX_HELLO_BYTES = 4096

SERVICE_HUB_API = 1
"""The port an agent-opened stream names to reach the hub's API through the broker (§5.1): agents
open streams to services, not ports, and this is the only one."""
MAX_OFFSET = 2**63 - 1
"""The largest byte offset in a stream that WINDOW_UPDATE and RESUME can carry (resume)."""

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_GOAWAY = struct.Struct("!II")
_WINDOW_UPDATE_RESUME = struct.Struct("!IQ")


class FrameType(enum.IntEnum):
    """The frame types of protocol version 1."""

    HELLO = 0
    OPEN = 1
    DATA = 2
    RESET = 3
    WINDOW_UPDATE = 4
    PING = 5
    GOAWAY = 6
    RESUME = 7


class Flag(enum.IntFlag):
    """Frame flags. Each is defined for one frame type only."""

    NONE = 0
    FIN = 0x1
    """DATA: the sender's direction of the stream ends after this payload. WINDOW_UPDATE (resume): the
    peer's FIN and all data before it arrived. RESUME: the last frame of the record."""
    ACK = 0x1
    """PING: this is the answer to a PING with the same payload."""
    CONFIRM = 0x2
    """DATA (resume): the sender's replay buffers are full; answer at once with a WINDOW_UPDATE that
    confirms what arrived (its increment may be 0)."""


# Plain ints: ``~`` on an IntFlag inverts only the bits it defines, which would let undefined bits pass.
_ALLOWED_FLAGS: dict[FrameType, int] = {
    FrameType.HELLO: 0,
    FrameType.OPEN: 0,
    FrameType.DATA: int(Flag.FIN | Flag.CONFIRM),
    FrameType.RESET: 0,
    FrameType.WINDOW_UPDATE: int(Flag.FIN),
    FrameType.PING: int(Flag.ACK),
    FrameType.GOAWAY: 0,
    FrameType.RESUME: int(Flag.FIN),
}
_CONNECTION_LEVEL = {FrameType.HELLO, FrameType.PING, FrameType.GOAWAY, FrameType.RESUME}



def check_header(type_byte: int, flags: int, stream_id: int, length: int, max_payload: int) -> FrameType:
    """Validate a frame header before its payload is read.

    Returns:
        The frame type.

    Raises:
        FrameTooLarge: the payload is longer than ``max_payload``.
        ProtocolError: unknown type, undefined flags, or a stream id that does not fit the type.
    """
    try:
        type_ = FrameType(type_byte)
    except ValueError:
        raise ProtocolError(f"unknown frame type {type_byte}") from None
    limit = MAX_HELLO_BYTES if type_ is FrameType.HELLO else max_payload
    if length > limit:
        raise FrameTooLarge(f"{type_.name} frame of {length} bytes exceeds the maximum of {limit}")
    if flags & ~_ALLOWED_FLAGS[type_]:
        raise ProtocolError(f"undefined flags 0x{flags:02x} on {type_.name}")
    if stream_id > MAX_STREAM_ID:
        raise ProtocolError(f"stream id {stream_id} out of range")
    if type_ in _CONNECTION_LEVEL:
        if stream_id != 0:
            raise ProtocolError(f"{type_.name} must be sent on stream 0")
    elif stream_id == 0:
        raise ProtocolError(f"{type_.name} needs a stream id")
    return type_


# Payload codecs. Each decode_* raises ProtocolError on a malformed payload. RESUME's is in resume.py.


def encode_open(port: int) -> bytes:
    return _U16.pack(port)


def decode_open(payload: bytes) -> int:
    if len(payload) != 2:
        raise ProtocolError("OPEN payload must be 2 bytes")
    (port,) = _U16.unpack(payload)
    if port == 0:
        raise ProtocolError("OPEN towards port 0")
    return int(port)


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def decode_reset(payload: bytes) -> int:
    if len(payload) != 4:
        raise ProtocolError("RESET payload must be 4 bytes")
    return int(_U32.unpack(payload)[0])


def decode_window_update(payload: bytes) -> int:
    if len(payload) != 4:
        raise ProtocolError("WINDOW_UPDATE payload must be 4 bytes")
    (increment,) = _U32.unpack(payload)
    if not 0 < increment <= MAX_WINDOW:
        raise ProtocolError(f"WINDOW_UPDATE increment {increment} out of range")
    return int(increment)


def encode_window_update_resume(increment: int, received: int) -> bytes:
    """WINDOW_UPDATE under "resume" (§9.1): the increment and the cumulative received offset."""
    return _WINDOW_UPDATE_RESUME.pack(increment, received)


def decode_window_update_resume(payload: bytes) -> tuple[int, int]:
    """WINDOW_UPDATE under "resume": (increment, received). The increment may be 0: a confirmation only."""
    if len(payload) != _WINDOW_UPDATE_RESUME.size:
        raise ProtocolError("WINDOW_UPDATE payload must be 12 bytes when resume is in use")
    increment, received = _WINDOW_UPDATE_RESUME.unpack(payload)
    if increment > MAX_WINDOW or received > MAX_OFFSET:
        raise ProtocolError(f"WINDOW_UPDATE increment {increment} out of range")
    return int(increment), int(received)


def decode_ping(payload: bytes) -> bytes:
    if len(payload) != 8:
        raise ProtocolError("PING payload must be 8 bytes")
    return payload


def encode_goaway(last_stream_id: int, code: int, reason: str) -> bytes:
    raw = reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]
    return _GOAWAY.pack(last_stream_id, code) + raw


def decode_goaway(payload: bytes) -> tuple[int, int, str]:
    if not 8 <= len(payload) <= 8 + MAX_REASON_BYTES:
        raise ProtocolError("GOAWAY payload must be 8 to 520 bytes")
    last, code = _GOAWAY.unpack_from(payload)
    if last > MAX_STREAM_ID:
        raise ProtocolError("GOAWAY last stream id out of range")
    return int(last), int(code), payload[8:].decode("utf-8", "replace")
