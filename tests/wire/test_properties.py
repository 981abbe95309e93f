"""Hypothesis properties of the wire layer (docs/protocol.md)."""

from __future__ import annotations

from batchtunnel.wire import (
    Connection,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Settings,
    Side,
    State,
    StreamEnded,
)
from batchtunnel.wire.frames import HEADER, FrameType, check_header
from batchtunnel.wire.hello import encode_hello
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.support.frames import Frame, serialize

from .pair import Pair

frame_strategy = st.one_of(
    st.builds(Frame, st.just(FrameType.DATA), st.sampled_from([0, 1]),
              st.integers(1, 2**31 - 1), st.binary(max_size=300)),
    st.builds(Frame, st.just(FrameType.RESET), st.just(0),
              st.integers(1, 2**31 - 1), st.binary(min_size=4, max_size=4)),
    st.builds(Frame, st.just(FrameType.PING), st.sampled_from([0, 1]),
              st.just(0), st.binary(min_size=8, max_size=8)),
)


@given(frame_strategy)
def test_parse_of_serialize_is_identity(frame: Frame) -> None:
    raw = serialize(frame)
    type_byte, flags, sid, length = HEADER.unpack_from(raw)
    assert check_header(type_byte, flags, sid, length, 1 << 20) is frame.type
    assert Frame(frame.type, flags, sid, raw[HEADER.size:HEADER.size + length]) == frame


def agent_stream_bytes(chunks: list[bytes]) -> tuple[bytes, bytes]:
    """An agent's HELLO, and what it sends on stream 1 (opened by the broker)."""
    agent = Connection(Side.AGENT)
    hello = agent.data_to_send()
    agent.receive_data(Connection(Side.BROKER).data_to_send())
    agent.receive_data(serialize(Frame(FrameType.OPEN, 0, 1, b"\x00\x50")))
    agent.events_received()
    for chunk in chunks:
        agent.send_data(1, chunk)
    agent.end_stream(1)
    return hello, agent.data_to_send()


def events_for(hello: bytes, data: bytes, cuts: list[int]) -> list[object]:
    broker = Connection(Side.BROKER)
    broker.receive_data(hello)
    broker.open_stream(80)
    broker.events_received()
    prev = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        broker.receive_data(data[prev:cut])
        prev = cut
    merged: list[object] = []
    for event in broker.events_received():
        if isinstance(event, DataReceived) and merged and isinstance(merged[-1], DataReceived):
            merged[-1] = DataReceived(event.stream_id, merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


@given(st.lists(st.binary(min_size=1, max_size=2000), max_size=8), st.lists(st.integers(0, 10**6), max_size=20))
def test_any_chunking_gives_the_same_events(chunks: list[bytes], cuts: list[int]) -> None:
    hello, data = agent_stream_bytes(chunks)
    whole = events_for(hello, data, [])
    assert events_for(hello, data, cuts) == whole
    if chunks:
        assert DataReceived(1, b"".join(chunks)) in whole  # type: ignore[arg-type]
    assert StreamEnded(1) in whole  # type: ignore[arg-type]


DOCUMENTED_CODES = {
    ErrorCode.PROTOCOL_ERROR, ErrorCode.FRAME_TOO_LARGE, ErrorCode.FLOW_CONTROL_ERROR,
    ErrorCode.VERSION_MISMATCH,
}


@given(st.binary(max_size=600), st.booleans())
@settings(max_examples=300)
def test_arbitrary_bytes_parse_or_fail_with_documented_code(data: bytes, after_hello: bool) -> None:
    conn = Connection(Side.BROKER, Settings(max_frame=16 * 1024))
    if after_hello:
        conn.receive_data(serialize(Frame(FrameType.HELLO, 0, 0, encode_hello(Settings()))))
    conn.receive_data(data)  # must never raise
    for event in conn.events_received():
        if isinstance(event, ConnectionTerminated):
            assert event.code in DOCUMENTED_CODES
            assert conn.state is State.CLOSED


class WindowMachine(RuleBasedStateMachine):
    """Random sends, acknowledgements and pumps: windows never go negative, nobody overruns one."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(agent=Settings(initial_window=64 * 1024, max_window=512 * 1024))
        self.sids = [self.pair.broker.open_stream(1) for _ in range(3)]
        self.unacked = {sid: 0 for sid in self.sids}
        self.sent = {sid: 0 for sid in self.sids}
        self.received = {sid: 0 for sid in self.sids}
        self.pair.pump()
        self.pair.take("agent")

    @rule(i=st.integers(0, 2), size=st.integers(1, 300_000))
    def send(self, i: int, size: int) -> None:
        self.pair.broker.send_data(self.sids[i], b"z" * size)
        self.sent[self.sids[i]] += size

    @rule()
    def pump(self) -> None:
        self.pair.pump()
        for event in self.pair.take("agent"):
            assert not isinstance(event, ConnectionTerminated), event
            if isinstance(event, DataReceived):
                self.unacked[event.stream_id] += len(event.data)
                self.received[event.stream_id] += len(event.data)
        self.pair.take("broker")

    @precondition(lambda self: any(self.unacked.values()))
    @rule(i=st.integers(0, 2), fraction=st.floats(0.1, 1.0))
    def acknowledge(self, i: int, fraction: float) -> None:
        sid = self.sids[i]
        n = int(self.unacked[sid] * fraction)
        self.pair.agent.acknowledge_received(sid, n)
        self.unacked[sid] -= n

    @invariant()
    def windows_hold(self) -> None:
        assert self.pair.agent.state is State.OPEN
        for sid in self.sids:
            assert self.pair.broker.send_credit(sid) >= 0
            window = self.pair.agent._streams.by_id[sid].recv
            assert window.credit >= 0
            # What the agent holds unacknowledged never exceeds the largest window.
            assert self.unacked[sid] <= 512 * 1024
            assert self.received[sid] <= self.sent[sid]


TestWindows = WindowMachine.TestCase
TestWindows.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
