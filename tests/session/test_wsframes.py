"""Our RFC 6455 codec: round trips under any chunking, and every framing violation refused with its code."""

from __future__ import annotations

import struct

import pytest
from batchtunnel.session.wsframes import (
    CloseCode,
    Control,
    FrameParser,
    FramingError,
    Opcode,
    encode,
    encode_close,
)
from hypothesis import given
from hypothesis import strategies as st


def frame_bytes(opcode: Opcode, payload: bytes, mask: bool) -> bytes:
    return b"".join(bytes(part) for part in encode(opcode, payload, mask))


@given(
    st.lists(st.binary(max_size=70_000), min_size=1, max_size=5),
    st.booleans(),
    st.lists(st.integers(0, 400_000), max_size=12),
)
def test_any_chunking_gives_the_same_payloads(payloads: list[bytes], mask: bool, cuts: list[int]) -> None:
    stream = b"".join(frame_bytes(Opcode.BINARY, p, mask) for p in payloads)
    stream += frame_bytes(Opcode.PING, b"hi", mask)
    parser = FrameParser(masked=mask, max_payload=1 << 20)
    out: list[bytes | Control] = []
    prev = 0
    for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]:
        out += parser.feed(stream[prev:cut])
        prev = cut
    data = b"".join(x for x in out if isinstance(x, bytes))
    assert data == b"".join(payloads)
    assert out[-1] == Control(Opcode.PING, b"hi")


def test_fragmented_message_payloads_pass_through() -> None:
    first = bytes([0x02, 3]) + b"abc"          # BINARY without FIN
    second = bytes([0x80, 2]) + b"de"          # CONT with FIN
    assert FrameParser(False, 100).feed(first + second) == [b"abc", b"de"]


def test_close_frame_code_and_reason() -> None:
    raw = b"".join(bytes(p) for p in encode_close(4001, "bye", mask=True))
    (close,) = FrameParser(True, 100).feed(raw)
    assert isinstance(close, Control) and close.code == 4001 and close.reason == "bye"


@pytest.mark.parametrize(
    "raw, masked, code",
    [
        (bytes([0x82, 0x01]) + b"x", True, CloseCode.PROTOCOL_ERROR),         # unmasked from a client
        (bytes([0x82, 0x81]) + b"kkkk" + b"x", False, CloseCode.PROTOCOL_ERROR),  # masked from a server
        (bytes([0x81, 0x01]) + b"x", False, CloseCode.UNSUPPORTED_DATA),      # text
        (bytes([0xC2, 0x01]) + b"x", False, CloseCode.PROTOCOL_ERROR),        # RSV1 without extension
        (bytes([0x83, 0x00]), False, CloseCode.PROTOCOL_ERROR),               # reserved opcode
        (bytes([0x80, 0x00]), False, CloseCode.PROTOCOL_ERROR),               # CONT outside a message
        (bytes([0x09, 0x00]), False, CloseCode.PROTOCOL_ERROR),               # fragmented ping
        (bytes([0x89, 126]) + struct.pack("!H", 126) + b"x" * 126, False, CloseCode.PROTOCOL_ERROR),
        (bytes([0x82, 127]) + struct.pack("!Q", 2**40), False, CloseCode.MESSAGE_TOO_BIG),
        (bytes([0x88, 0x01, 0x00]), False, CloseCode.PROTOCOL_ERROR),         # 1-byte close payload
        # Close codes no peer may send (RFC 6455 7.4): refused, not echoed.
        (bytes([0x88, 0x02]) + struct.pack("!H", 0), False, CloseCode.PROTOCOL_ERROR),  # close 0
        (bytes([0x88, 0x02]) + struct.pack("!H", 999), False, CloseCode.PROTOCOL_ERROR),  # close 999
        (bytes([0x88, 0x02]) + struct.pack("!H", 1004), False, CloseCode.PROTOCOL_ERROR),  # close 1004
        (bytes([0x88, 0x02]) + struct.pack("!H", 1005), False, CloseCode.PROTOCOL_ERROR),  # close 1005
        (bytes([0x88, 0x02]) + struct.pack("!H", 1006), False, CloseCode.PROTOCOL_ERROR),  # close 1006
        (bytes([0x88, 0x02]) + struct.pack("!H", 1015), False, CloseCode.PROTOCOL_ERROR),  # close 1015
        (bytes([0x88, 0x02]) + struct.pack("!H", 1016), False, CloseCode.PROTOCOL_ERROR),  # close 1016
        (bytes([0x88, 0x02]) + struct.pack("!H", 2999), False, CloseCode.PROTOCOL_ERROR),  # close 2999
        (bytes([0x88, 0x02]) + struct.pack("!H", 5000), False, CloseCode.PROTOCOL_ERROR),  # close 5000
        (bytes([0x88, 0x02]) + struct.pack("!H", 65535), False, CloseCode.PROTOCOL_ERROR),  # close 65535
        (bytes([0x88, 0x04]) + struct.pack("!H", 1000) + b"\xff\xfe", False, CloseCode.INVALID_DATA),
    ],
)
def test_violations_are_refused_with_their_code(raw: bytes, masked: bool, code: int) -> None:
    with pytest.raises(FramingError) as exc:
        FrameParser(masked, 1 << 20).feed(raw)
    assert exc.value.code == code


@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes_parse_or_raise_framing_error(raw: bytes, masked: bool) -> None:
    try:
        FrameParser(masked, 1024).feed(raw)
    except FramingError as exc:
        assert exc.code in (CloseCode.PROTOCOL_ERROR, CloseCode.UNSUPPORTED_DATA, CloseCode.MESSAGE_TOO_BIG,
                            CloseCode.INVALID_DATA)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4001, 4999])
def test_close_codes_a_peer_may_send_are_accepted(code: int) -> None:
    (close,) = FrameParser(False, 1024).feed(bytes([0x88, 0x04]) + struct.pack("!H", code) + b"ok")
    assert isinstance(close, Control) and (close.code, close.reason) == (code, "ok")
