"""Behaviour of the wire Connection, synchronously, two peers over an in-memory link."""

from __future__ import annotations

import json
import struct

import pytest
from batchtunnel.wire import (
    Connection,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    GoAwayReceived,
    InvalidState,
    PingAcknowledged,
    Settings,
    Side,
    State,
    StreamDrained,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from batchtunnel.wire.connection import MAX_CONTROL_BACKLOG
from batchtunnel.wire.frames import Flag, FrameType
from batchtunnel.wire.hello import encode_hello

from tests.support.frames import frame

from .pair import Pair

KIB = 1024


def data_of(events: list[object], sid: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataReceived) and e.stream_id == sid)


def test_open_send_half_close_both_ways() -> None:
    p = Pair()
    sid = p.broker.open_stream(8888)
    assert sid % 2 == 1
    p.broker.send_data(sid, b"GET / HTTP/1.1\r\n\r\n", end_stream=True)
    p.pump()
    events = p.take("agent")
    assert events[0] == StreamOpened(sid, 8888)
    assert data_of(events, sid) == b"GET / HTTP/1.1\r\n\r\n"
    assert events[-1] == StreamEnded(sid)
    # The other direction is still open after the half-close.
    p.agent.send_data(sid, b"reply")
    p.agent.end_stream(sid)
    p.pump()
    events = p.take("broker")
    assert data_of(events, sid) == b"reply"
    assert StreamEnded(sid) in events
    assert p.broker.stream_ids() == [] and p.agent.stream_ids() == []


def test_agent_opens_even_ids() -> None:
    p = Pair()
    assert p.agent.open_stream(8081) == 2
    assert p.agent.open_stream(8081) == 4


def test_sender_never_exceeds_window_and_drains_after_acknowledge() -> None:
    p = Pair()
    sid = p.broker.open_stream(1)
    payload = bytes(range(256)) * 4 * KIB  # 1 MiB
    assert p.broker.send_data(sid, payload) is False
    assert p.broker.send_credit(sid) == 0
    assert p.broker.buffered(sid) == len(payload) - 256 * KIB
    p.pump()
    received = data_of(p.take("agent"), sid)
    assert len(received) == 256 * KIB  # nothing beyond the initial window
    got = received
    drained = False
    while len(got) < len(payload):
        p.agent.acknowledge_received(sid, len(received))
        p.pump()
        drained = drained or StreamDrained(sid) in p.take("broker")
        received = data_of(p.take("agent"), sid)
        assert received, "acknowledging must release more data"
        got += received
    assert got == payload
    assert drained


def test_single_stream_window_reaches_ceiling() -> None:
    p = Pair(agent=Settings(initial_window=256 * KIB, max_window=4096 * KIB))
    sid = p.broker.open_stream(1)
    assert p.broker.send_credit(sid) == 256 * KIB
    for _ in range(40):
        p.broker.send_data(sid, b"x" * (1024 * KIB))
        p.pump()
        p.agent.acknowledge_received(sid, len(data_of(p.take("agent"), sid)))
        p.pump()
        p.take("broker")
    # Let everything through; measure how much the broker may send at once.
    while p.broker.buffered(sid):
        p.pump()
        p.agent.acknowledge_received(sid, len(data_of(p.take("agent"), sid)))
        p.pump()
    largest = p.broker.send_credit(sid)
    assert largest > 2048 * KIB  # grew towards the 4 MiB ceiling
    assert largest <= 4096 * KIB


def test_stalled_stream_does_not_block_another() -> None:
    p = Pair()
    stalled = p.broker.open_stream(1)
    busy = p.broker.open_stream(1)
    p.broker.send_data(stalled, b"s" * (2048 * KIB))  # never acknowledged
    total = 0
    for _ in range(64):
        p.broker.send_data(busy, b"b" * (1024 * KIB))
        p.pump()
        events = p.take("agent")
        n = len(data_of(events, busy))
        total += n
        p.agent.acknowledge_received(busy, n)
        p.pump()
    assert total >= 60 * 1024 * KIB
    assert p.broker.buffered(stalled) == 2048 * KIB - 256 * KIB


def test_reset_reaches_peer_and_late_data_is_ignored() -> None:
    p = Pair()
    sid = p.broker.open_stream(1)
    p.pump()
    p.take("agent")
    p.agent.send_data(sid, b"in flight")
    in_flight = p.agent.data_to_send()
    p.broker.reset_stream(sid, ErrorCode.CANCEL)
    p.broker.receive_data(in_flight)  # data racing the reset: ignored, no error
    assert p.broker.state is State.OPEN
    assert p.broker.events_received() == []
    p.pump()
    assert p.take("agent") == [StreamReset(sid, ErrorCode.CANCEL)]


def test_refused_when_peer_stream_limit_reached() -> None:
    p = Pair(agent=Settings(max_streams=2))
    p.broker.open_stream(1)
    p.broker.open_stream(1)
    with pytest.raises(InvalidState):
        p.broker.open_stream(1)


def test_ping_is_answered() -> None:
    p = Pair()
    p.broker.ping(b"12345678")
    p.pump()
    assert p.take("broker") == [PingAcknowledged(b"12345678")]


def test_graceful_goaway_refuses_new_streams_keeps_old() -> None:
    p = Pair()
    sid = p.broker.open_stream(1)
    p.pump()
    p.agent.go_away()
    p.pump()
    events = p.take("broker")
    assert isinstance(events[0], GoAwayReceived)
    with pytest.raises(InvalidState):
        p.broker.open_stream(1)
    p.broker.send_data(sid, b"still fine")
    p.pump()
    assert data_of(p.take("agent"), sid) == b"still fine"


def test_eof_resets_every_stream() -> None:
    p = Pair()
    a, b = p.broker.open_stream(1), p.broker.open_stream(2)
    p.broker.receive_eof()
    events = p.broker.events_received()
    assert StreamReset(a, ErrorCode.CONNECTION_LOST) in events
    assert StreamReset(b, ErrorCode.CONNECTION_LOST) in events
    assert isinstance(events[-1], ConnectionTerminated)


def test_commands_before_handshake_are_misuse() -> None:
    conn = Connection(Side.BROKER)
    with pytest.raises(InvalidState):
        conn.open_stream(1)
    with pytest.raises(InvalidState):
        conn.send_data(1, b"x")


def test_send_after_end_is_misuse() -> None:
    p = Pair()
    sid = p.broker.open_stream(1)
    p.broker.end_stream(sid)
    with pytest.raises(InvalidState):
        p.broker.send_data(sid, b"late")


# --------------------------------------------------------------- hostile peers


def raw(type_: FrameType, sid: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return frame(type_, sid, payload, flags)


def handshaken(side: Side = Side.AGENT) -> Connection:
    """A connection whose peer speaks the base protocol (no optional feature): the frames below are v1's."""
    conn = Connection(side)
    conn.receive_data(raw(FrameType.HELLO, 0, encode_hello(Settings(features=()))))
    conn.events_received()
    conn.data_to_send()
    return conn


def terminated_code(conn: Connection) -> int:
    events = conn.events_received()
    assert isinstance(events[-1], ConnectionTerminated)
    assert conn.state is State.CLOSED
    out = conn.data_to_send()
    # The last frame is a GOAWAY carrying the same code.
    assert out[0] == FrameType.GOAWAY
    assert struct.unpack_from("!I", out, 14)[0] == events[-1].code
    return events[-1].code


@pytest.mark.parametrize(
    "data, code",
    [
        (raw(FrameType.DATA, 1, b"x"), ErrorCode.PROTOCOL_ERROR),  # before HELLO
        (raw(FrameType.HELLO, 0, b"not json"), ErrorCode.PROTOCOL_ERROR),
        (raw(FrameType.HELLO, 0, json.dumps({"versions": [7]}).encode()), ErrorCode.VERSION_MISMATCH),
        (b"\x09" + b"\x00" * 9, ErrorCode.PROTOCOL_ERROR),  # unknown type
        (raw(FrameType.HELLO, 0, b"x" * 5000), ErrorCode.FRAME_TOO_LARGE),
        (raw(FrameType.HELLO, 0, b"[" * 4000), ErrorCode.PROTOCOL_ERROR),  # deep: no RecursionError
        (raw(FrameType.HELLO, 0, b'{"versions": ' + b"[" * 4000), ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_bad_first_frames(data: bytes, code: int) -> None:
    conn = Connection(Side.BROKER)
    conn.data_to_send()
    conn.receive_data(data)
    assert terminated_code(conn) == code


OPEN_1 = raw(FrameType.OPEN, 1, b"\x00\x50")


@pytest.mark.parametrize(
    "data, code",
    [
        (raw(FrameType.HELLO, 0, encode_hello(Settings())), ErrorCode.PROTOCOL_ERROR),  # second HELLO
        (raw(FrameType.DATA, 7, b"x"), ErrorCode.PROTOCOL_ERROR),  # never opened
        (raw(FrameType.OPEN, 2, b"\x00\x50"), ErrorCode.PROTOCOL_ERROR),  # agent's parity
        (raw(FrameType.OPEN, 1, b"\x00\x00"), ErrorCode.PROTOCOL_ERROR),  # port 0
        (raw(FrameType.PING, 3, b"12345678"), ErrorCode.PROTOCOL_ERROR),  # ping on a stream
        # Undefined flags, on a stream that exists (so that nothing else is wrong with the frame).
        (OPEN_1 + raw(FrameType.DATA, 1, b"x", flags=0xF0), ErrorCode.PROTOCOL_ERROR),
        (OPEN_1 + raw(FrameType.DATA, 1, b"x", flags=0x80), ErrorCode.PROTOCOL_ERROR),
        (raw(FrameType.PING, 0, b"12345678", flags=0x80), ErrorCode.PROTOCOL_ERROR),
        (OPEN_1 + raw(FrameType.WINDOW_UPDATE, 1, b"\x00\x00\x01\x00", flags=0x40), ErrorCode.PROTOCOL_ERROR),
        (raw(FrameType.GOAWAY, 0, b"\x00" * 8, flags=0x01), ErrorCode.PROTOCOL_ERROR),
        (struct.pack("!BBII", 2, 0, 1, 10**7), ErrorCode.FRAME_TOO_LARGE),
        (raw(FrameType.WINDOW_UPDATE, 1, b"\x00\x00\x00\x00"), ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_bad_frames_after_handshake(data: bytes, code: int) -> None:
    conn = handshaken()
    conn.receive_data(data)
    assert terminated_code(conn) == code


def test_window_overflow_is_flow_control_error() -> None:
    conn = handshaken()
    conn.receive_data(raw(FrameType.OPEN, 1, b"\x00\x50"))
    conn.receive_data(raw(FrameType.DATA, 1, b"x" * (200 * KIB)))
    conn.receive_data(raw(FrameType.DATA, 1, b"x" * (100 * KIB)))
    assert terminated_code(conn) == ErrorCode.FLOW_CONTROL_ERROR


def test_window_update_past_limit_is_flow_control_error() -> None:
    conn = handshaken(Side.BROKER)
    sid = conn.open_stream(80)
    conn.data_to_send()
    conn.receive_data(raw(FrameType.WINDOW_UPDATE, sid, struct.pack("!I", 2**31 - 1)))
    assert terminated_code(conn) == ErrorCode.FLOW_CONTROL_ERROR


def test_data_after_fin_resets_only_that_stream() -> None:
    conn = handshaken()
    conn.receive_data(raw(FrameType.OPEN, 1, b"\x00\x50") + raw(FrameType.OPEN, 3, b"\x00\x50"))
    conn.receive_data(raw(FrameType.DATA, 1, b"a", flags=Flag.FIN))
    conn.events_received()
    conn.receive_data(raw(FrameType.DATA, 1, b"late"))
    assert conn.events_received() == [StreamReset(1, ErrorCode.STREAM_CLOSED)]  # type: ignore[arg-type]
    assert conn.state is State.OPEN
    assert conn.stream_ids() == [3]


def test_stream_flood_is_refused_beyond_limit() -> None:
    conn = Connection(Side.AGENT, Settings(max_streams=3))
    conn.receive_data(raw(FrameType.HELLO, 0, encode_hello(Settings())))
    conn.data_to_send()
    for sid in range(1, 20, 2):
        conn.receive_data(raw(FrameType.OPEN, sid, b"\x00\x50"))
    opened = [e for e in conn.events_received() if isinstance(e, StreamOpened)]
    assert len(opened) == 3
    assert conn.data_to_send().count(bytes([FrameType.RESET, 0])) == 7
    assert conn.state is State.OPEN


def test_the_session_budget_refuses_streams_past_it_and_caps_window_growth() -> None:
    small = Settings(initial_window=64 * KIB, max_window=1024 * KIB, session_window=256 * KIB)
    p = Pair(broker=small)
    # The agent opens streams towards the broker: the fifth would pass the broker's budget.
    sids = [p.agent.open_stream(1) for _ in range(5)]
    p.pump()
    events = p.take("agent")
    assert StreamReset(sids[4], ErrorCode.REFUSED_STREAM) in events
    assert [e for e in events if isinstance(e, StreamReset)] == [StreamReset(sids[4], ErrorCode.REFUSED_STREAM)]
    # The broker cannot open one of its own either: its receive window would pass the budget too.
    with pytest.raises(InvalidState, match="budget"):
        p.broker.open_stream(8888)
    # With the budget full, a bulk stream's window does not grow, however much it consumes.
    consume(p, sids[0], 8 * 64 * KIB)
    assert p.agent.send_credit(sids[0]) <= 64 * KIB
    # Closing streams frees budget: now the window grows.
    for sid in sids[1:4]:
        p.agent.reset_stream(sid)
    p.pump()
    consume(p, sids[0], 8 * 64 * KIB)
    assert p.agent.send_credit(sids[0]) > 64 * KIB


def test_grown_windows_leave_room_for_new_streams() -> None:
    """Bulk streams that grew to their ceiling must not keep a notebook from opening its next
    connection: growth stops a quarter of the budget short of it, which new streams may use."""
    budget = 1024 * KIB
    p = Pair(broker=Settings(initial_window=64 * KIB, max_window=1024 * KIB, session_window=budget),
             agent=Settings(initial_window=64 * KIB, max_window=1024 * KIB, session_window=budget))
    bulk = p.agent.open_stream(1)
    p.pump()
    consume(p, bulk, 64 * 64 * KIB)
    assert p.broker.receive_windows == budget * 3 // 4  # it grew as far as it may
    # Four more streams fit beside it, from either side; the budget is still never passed.
    sids = [p.agent.open_stream(1) for _ in range(2)] + [p.broker.open_stream(80) for _ in range(2)]
    p.pump()
    assert not [e for e in p.take("agent") + p.take("broker") if isinstance(e, StreamReset)]
    assert p.broker.receive_windows == budget
    assert sorted(p.broker.stream_ids()) == sorted([bulk, *sids])
    consume(p, bulk, 16 * 64 * KIB)
    assert p.broker.receive_windows == budget


def consume(p: Pair, sid: int, size: int) -> None:
    """The agent sends ``size`` bytes on ``sid`` in 64 KiB pieces; the broker delivers and acknowledges each."""
    for _ in range(size // (64 * KIB)):
        p.agent.send_data(sid, b"x" * 64 * KIB)
        p.pump()
        delivered = sum(len(e.data) for e in p.take("broker") if isinstance(e, DataReceived))
        p.broker.acknowledge_received(sid, delivered)
        p.pump()


def test_session_window_below_initial_window_is_a_configuration_error() -> None:
    from batchtunnel.wire import ConfigurationError

    with pytest.raises(ConfigurationError, match="session_window"):
        Settings(initial_window=256 * KIB, session_window=128 * KIB)


# ------------------------------------------------ answers the peer does not read (§7.1)


def test_a_ping_flood_whose_answers_are_never_taken_is_held_not_answered_without_end() -> None:
    conn = handshaken(Side.BROKER)
    pings = 100_000  # 1.8 MB of PINGs
    conn.receive_data(raw(FrameType.PING, 0, b"12345678") * pings)
    assert conn.input_paused
    assert conn.bytes_to_send < MAX_CONTROL_BACKLOG + 18  # not 100,000 ACKs (1.8 MB)
    conn.receive_data(raw(FrameType.PING, 0, b"12345678"))  # more arrives while paused: held
    assert conn.bytes_to_send < MAX_CONTROL_BACKLOG + 18
    # Nothing is lost: each time the answers are taken, the held input goes on.
    answered = 0
    for _ in range(100):
        out = conn.data_to_send()
        answered += len(out) // 18
        conn.receive_data(b"")
        if not conn.input_paused and not conn.bytes_to_send:
            break
    assert answered == pings + 1
    assert conn.state is State.OPEN


def test_data_is_processed_while_answers_wait_below_the_bound() -> None:
    """Ordinary traffic never meets the bound: a few PINGs unanswered do not hold DATA back."""
    p = Pair()
    sid = p.broker.open_stream(80)
    p.pump()
    for _ in range(100):
        p.agent.receive_data(raw(FrameType.PING, 0, b"12345678"))
    assert not p.agent.input_paused
    p.broker.send_data(sid, b"hello")
    p.agent.receive_data(p.broker.data_to_send())
    assert any(isinstance(e, DataReceived) and e.data == b"hello" for e in p.agent.events_received())
