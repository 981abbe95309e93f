"""RFC 6455 framing for an open WebSocket, as the tunnel needs it (sans I/O).

The opening handshake is websockets' job (HTTP parsing, Sec-WebSocket-Accept).
Once the connection is open, ``WebSocketLink`` frames and parses with this
codec: a tunnel session only exchanges binary messages whose boundaries carry
no meaning (docs/protocol.md §1), so each data frame's payload is passed on as
it arrives, without assembling messages, and with one copy (or one unmasking)
per payload instead of several.

Examples of frame headers (hex)::

    82 05 <5 bytes>                  binary, FIN, 5 bytes, unmasked (server -> client)
    82 fe 01 00 <mask:4> <256 bytes> binary, FIN, 256 bytes, masked (client -> server)
    88 02 03 e8                      close 1000
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass
from typing import Union

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

from ..wire import FramingError

Buffer = Union[bytes, bytearray, memoryview]

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_SMALL = 4096  # payloads below this are joined with their header into one write


class Opcode(enum.IntEnum):
    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_DATA = 1007
    NO_STATUS = 1005
    MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True)
class Control:
    """A control frame: PING, PONG or CLOSE (``code``/``reason`` for CLOSE)."""

    opcode: Opcode
    payload: bytes
    code: int = CloseCode.NO_STATUS
    reason: str = ""


class FrameParser:
    """Bytes in, payloads and control frames out.

    Args:
        masked: whether frames must be masked (True on the server side).
        max_payload: the longest frame payload accepted.
    """

    def __init__(self, masked: bool, max_payload: int) -> None:
        self.masked = masked
        self.max_payload = max_payload
        self._buf = bytearray()
        self._fragmented = False

    def feed(self, data: Buffer) -> list[bytes | Control]:
        """Parse ``data``; return data payloads (bytes) and Control frames in order.

        Raises:
            FramingError: the peer broke the framing rules; stop parsing and close.
        """
        out: list[bytes | Control] = []
        if self._buf:
            self._buf += data
            consumed = self._parse(self._buf, out)
            del self._buf[:consumed]
        else:
            consumed = self._parse(data, out)
            if consumed < len(data):
                self._buf += memoryview(data)[consumed:]
        return out

    def _parse(self, buf: Buffer, out: list[bytes | Control]) -> int:
        pos, end = 0, len(buf)
        with memoryview(buf) as view:
            while end - pos >= 2:
                b1, b2 = view[pos], view[pos + 1]
                length = b2 & 0x7F
                head = 2
                if length == 126:
                    if end - pos < 4:
                        break
                    (length,) = _U16.unpack_from(view, pos + 2)
                    head = 4
                elif length == 127:
                    if end - pos < 10:
                        break
                    (length,) = _U64.unpack_from(view, pos + 2)
                    head = 10
                masked = bool(b2 & 0x80)
                self._check(b1, masked, length)
                if masked:
                    head += 4
                if end - pos < head + length:
                    break
                start = pos + head
                if masked:
                    payload = apply_mask(view[start:start + length], view[start - 4:start].tobytes())
                else:
                    payload = view[start:start + length].tobytes()
                pos = start + length
                opcode = b1 & 0x0F
                if opcode in (Opcode.BINARY, Opcode.CONT):
                    self._fragmented = not (b1 & 0x80)
                    if payload:
                        out.append(payload)
                else:
                    out.append(_control(Opcode(opcode), payload))
        return pos

    def _check(self, b1: int, masked: bool, length: int) -> None:
        opcode = b1 & 0x0F
        if b1 & 0x70:
            raise FramingError(CloseCode.PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
        if masked != self.masked:
            raise FramingError(CloseCode.PROTOCOL_ERROR, "masked frame from the server" if masked
                               else "unmasked frame from the client")
        if opcode == Opcode.TEXT:
            raise FramingError(CloseCode.UNSUPPORTED_DATA, "text messages are not accepted")
        if opcode >= 0x8:
            if opcode not in (Opcode.CLOSE, Opcode.PING, Opcode.PONG):
                raise FramingError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
            if not b1 & 0x80 or length > 125:
                raise FramingError(CloseCode.PROTOCOL_ERROR, "fragmented or oversized control frame")
        elif opcode == Opcode.CONT:
            if not self._fragmented:
                raise FramingError(CloseCode.PROTOCOL_ERROR, "continuation frame outside a message")
        elif opcode == Opcode.BINARY:
            if self._fragmented:
                raise FramingError(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
        else:
            raise FramingError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if length > self.max_payload:
            raise FramingError(CloseCode.MESSAGE_TOO_BIG, f"frame of {length} bytes exceeds {self.max_payload}")


def _control(opcode: Opcode, payload: bytes) -> Control:
    if opcode is not Opcode.CLOSE:
        return Control(opcode, payload)
    if len(payload) == 0:
        return Control(opcode, payload)
    if len(payload) == 1:
        raise FramingError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    (code,) = _U16.unpack_from(payload)
    if not _sendable(code):
        raise FramingError(CloseCode.PROTOCOL_ERROR, f"close code {code} may not be sent (RFC 6455 7.4)")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FramingError(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
    return Control(opcode, payload, code, reason)


def _sendable(code: int) -> bool:
    """A close code a peer may put on the wire: RFC 6455's and IANA's defined ones but the three that
    only name a local condition (1005, 1006, 1015), and the ranges for libraries and applications."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def encode(opcode: Opcode, payload: Buffer, mask: bool) -> list[Buffer]:
    """The buffers of one frame, to write in order: header (+ mask key), then payload."""
    n = len(payload)
    b1 = 0x80 | opcode
    b2 = 0x80 if mask else 0
    if n < 126:
        header = bytes((b1, b2 | n))
    elif n < 65536:
        header = bytes((b1, b2 | 126)) + _U16.pack(n)
    else:
        header = bytes((b1, b2 | 127)) + _U64.pack(n)
    if mask:
        key = os.urandom(4)
        header += key
        payload = apply_mask(payload, key)
    if n < _SMALL:
        return [header + bytes(payload)]
    return [header, payload]


def encode_close(code: int, reason: str, mask: bool) -> list[Buffer]:
    return encode(Opcode.CLOSE, _U16.pack(code) + reason.encode("utf-8")[:123], mask)
