"""Streams outlive a lost transport (docs/protocol.md §9): suspend, RESUME, replay."""

from __future__ import annotations

import os

import pytest
from batchtunnel.wire import (
    ConnectionTerminated,
    ErrorCode,
    InvalidState,
    Settings,
    State,
    StreamReset,
)
from batchtunnel.wire.frames import HEADER, FrameType
from batchtunnel.wire.resume import ResumeEntry, encode_resume
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from .lossy import End, LossyPair


def resets(end: End) -> list[StreamReset]:
    return [e for e in end.events if isinstance(e, StreamReset)]


def assert_clean(pair: LossyPair) -> None:
    """No stream left, nothing held for replay, no reset anywhere."""
    for end in pair.ends():
        assert end.conn.state is State.OPEN
        assert end.conn.stream_ids() == []
        assert end.conn.replay_bytes == 0
        assert resets(end) == []


def test_transfer_both_ways_survives_a_cut_mid_flight() -> None:
    pair = LossyPair()
    up, down = os.urandom(3_000_000), os.urandom(2_000_000)
    sid = pair.broker.conn.open_stream(8888)
    pair.broker.conn.send_data(sid, up, end_stream=True)
    pair.transmit(pair.broker, 100)  # the OPEN and a few bytes
    pair.agent.conn.send_data(sid, down, end_stream=True)
    pair.transmit(pair.broker, 150_000)
    pair.transmit(pair.agent, 70_000)
    pair.agent.acknowledge()
    pair.broker.acknowledge()
    pair.cut(to_agent=33_333, to_broker=12_345)  # partial frames included
    resumed = pair.resume()
    assert len(resumed) == 2 and all(r.replayed > 0 and r.lost == 0 for r in resumed)
    assert bytes(pair.agent.received[sid]) == up
    assert bytes(pair.broker.received[sid]) == down
    assert pair.agent.opened == [(sid, 8888)]
    assert sid in pair.agent.ended and sid in pair.broker.ended
    assert_clean(pair)


def test_an_open_lost_with_the_link_is_sent_again() -> None:
    pair = LossyPair()
    sid = pair.broker.conn.open_stream(80)
    pair.broker.conn.send_data(sid, b"GET / HTTP/1.1\r\n\r\n")
    pair.cut()
    assert pair.agent.opened == []
    pair.resume()
    assert pair.agent.opened == [(sid, 80)]
    assert bytes(pair.agent.received[sid]) == b"GET / HTTP/1.1\r\n\r\n"


def test_streams_opened_and_written_while_suspended_go_out_on_resume() -> None:
    pair = LossyPair()
    pair.cut()
    sid = pair.broker.conn.open_stream(80)
    assert pair.broker.conn.send_data(sid, b"x" * 500_000) is False  # waits: no transport
    assert pair.broker.conn.data_to_send() == b""
    pair.resume()
    assert pair.agent.opened == [(sid, 80)]
    assert len(pair.agent.received[sid]) == 500_000


def test_lost_fin_and_lost_fin_acknowledgement_both_end_the_stream() -> None:
    pair = LossyPair()
    sid = pair.broker.conn.open_stream(80)
    pair.settle()
    pair.broker.conn.send_data(sid, b"request", end_stream=True)
    pair.agent.conn.send_data(sid, b"response", end_stream=True)
    pair.cut()  # both FINs lost
    pair.resume()
    assert pair.agent.received[sid] == b"request" and pair.broker.received[sid] == b"response"
    assert_clean(pair)

    sid = pair.broker.conn.open_stream(80)
    pair.settle()
    pair.broker.conn.send_data(sid, b"a", end_stream=True)
    pair.agent.conn.send_data(sid, b"b", end_stream=True)
    to_agent, to_broker = pair.broker.conn.data_to_send(), pair.agent.conn.data_to_send()
    pair.agent.conn.receive_data(to_agent)
    pair.broker.conn.receive_data(to_broker)
    pair.agent.collect()
    pair.broker.collect()
    assert sid in pair.agent.ended and sid in pair.broker.ended
    pair.cut()  # both FIN confirmations lost: each side still holds the stream
    assert pair.broker.conn.stream_ids() == [sid] and pair.agent.conn.stream_ids() == [sid]
    pair.resume()
    assert_clean(pair)


def test_a_reset_lost_with_the_link_reaches_the_peer_after_resume() -> None:
    pair = LossyPair()
    sid = pair.broker.conn.open_stream(80)
    pair.settle()
    pair.broker.conn.reset_stream(sid, ErrorCode.CANCEL)
    pair.cut()
    assert pair.agent.conn.stream_ids() == [sid]
    resumed = pair.resume()
    assert [r.lost for r in resumed if r.lost] == [1]
    assert [(r.stream_id, r.code) for r in resets(pair.agent)] == [(sid, ErrorCode.CANCEL)]
    assert pair.agent.conn.stream_ids() == [] and pair.broker.conn.stream_ids() == []


def test_credit_granted_while_suspended_is_not_lost() -> None:
    """Acknowledgements made while no transport exists reach the sender through RESUME's limit."""
    pair = LossyPair()
    sid = pair.broker.conn.open_stream(80)
    pair.settle()
    window = pair.agent.conn.send_credit(sid)
    pair.agent.conn.send_data(sid, b"y" * window)
    pair.transmit(pair.agent)
    assert pair.agent.conn.send_credit(sid) == 0
    pair.cut()
    pair.broker.acknowledge()  # the local socket took it all, while the link was down
    pair.resume()
    assert pair.agent.conn.send_credit(sid) >= window


def test_a_second_cut_during_resumption_is_survived() -> None:
    pair = LossyPair()
    data = os.urandom(1_000_000)
    sid = pair.broker.conn.open_stream(80)
    pair.broker.conn.send_data(sid, data, end_stream=True)
    pair.transmit(pair.broker, 200_000)
    pair.cut()
    for end in pair.ends():
        end.conn.resume()
    pair.transmit(pair.broker, 30)  # part of the RESUME only
    pair.cut()
    pair.resume()
    assert bytes(pair.agent.received[sid]) == data
    pair.agent.conn.end_stream(sid)
    pair.settle()
    assert_clean(pair)


def test_suspend_without_the_feature_is_refused() -> None:
    pair = LossyPair(agent=Settings(features=()))
    assert pair.broker.conn.resumable is False
    assert pair.broker.conn.suspend() is False
    assert pair.broker.conn.state is State.OPEN
    with pytest.raises(InvalidState):
        pair.broker.conn.resume()


def test_replay_is_bounded_by_the_session_window() -> None:
    """A peer that grants credit but never confirms receipt cannot make us hold more than the budget."""
    budget = 1024 * 1024
    pair = LossyPair(broker=Settings(session_window=budget, initial_window=256 * 1024))
    sids = [pair.broker.conn.open_stream(80) for _ in range(4)]
    pair.settle()
    for sid in sids:
        pair.broker.conn.send_data(sid, os.urandom(2_000_000))
    assert pair.broker.conn.replay_bytes <= budget
    pair.settle()
    assert all(len(pair.agent.received[sid]) == 2_000_000 for sid in sids)
    assert pair.broker.conn.replay_bytes <= budget


def terminated(end: End) -> int:
    events = [e for e in end.events if isinstance(e, ConnectionTerminated)]
    assert events and end.conn.state is State.CLOSED
    return events[-1].code


def frame(type_: FrameType, flags: int, sid: int, payload: bytes) -> bytes:
    return HEADER.pack(type_, flags, sid, len(payload)) + payload


@pytest.mark.parametrize("bad", [
    "data before resume", "resume asks for forgotten bytes", "resume names a stream never opened",
    "limit below what was sent", "truncated entry",
])
def test_a_malformed_resumption_is_a_protocol_error(bad: str) -> None:
    pair = LossyPair()
    sid = pair.broker.conn.open_stream(80)
    pair.broker.conn.send_data(sid, b"z" * 300_000)
    pair.settle()  # the agent confirmed it all: the broker holds nothing for replay
    pair.cut()
    pair.broker.conn.resume()
    pair.broker.conn.data_to_send()
    good = ResumeEntry(sid, 300_000, 300_000 + 262144, False, False)
    payload = {
        "data before resume": frame(FrameType.DATA, 0, sid, b"early"),
        "resume asks for forgotten bytes": frame(FrameType.RESUME, 1, 0, encode_resume(
            sid, [ResumeEntry(sid, 1000, 400_000, False, False)], 1 << 20)[0]),
        "resume names a stream never opened": frame(FrameType.RESUME, 1, 0, encode_resume(
            sid, [good, ResumeEntry(sid + 2, 0, 65536, False, False)], 1 << 20)[0]),
        "limit below what was sent": frame(FrameType.RESUME, 1, 0, encode_resume(
            sid, [ResumeEntry(sid, 300_000, 300_000, False, False)], 1 << 20)[0][:-17] + (
                (300_000).to_bytes(8, "big") + (299_999).to_bytes(8, "big") + b"\x00")),
        "truncated entry": frame(FrameType.RESUME, 1, 0, encode_resume(sid, [good], 1 << 20)[0][:-1]),
    }[bad]
    pair.broker.conn.receive_data(payload)
    pair.broker.collect()
    assert terminated(pair.broker) in (ErrorCode.PROTOCOL_ERROR, ErrorCode.FLOW_CONTROL_ERROR)


def test_resume_outside_a_resumption_is_a_protocol_error() -> None:
    pair = LossyPair()
    pair.broker.conn.receive_data(frame(FrameType.RESUME, 1, 0, encode_resume(0, [], 1 << 20)[0]))
    pair.broker.collect()
    assert terminated(pair.broker) == ErrorCode.PROTOCOL_ERROR


class Drops(RuleBasedStateMachine):
    """Random traffic on random streams, both ways, with the link cut at random points (partial
    frames included), acknowledgements delayed: every byte and FIN arrives once, in order, and
    nothing is reset or left behind."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = LossyPair(
            broker=Settings(initial_window=65536, max_window=262144, session_window=1 << 20, max_frame=16384),
            agent=Settings(initial_window=65536, max_window=262144, session_window=1 << 20, max_frame=16384),
        )
        self.sent: dict[tuple[str, int], bytearray] = {}
        self.open_sending: list[tuple[str, int]] = []
        self.cuts = 0

    def end(self, name: str) -> End:
        return self.pair.broker if name == "broker" else self.pair.agent

    @rule(side=st.sampled_from(["broker", "agent"]))
    def open(self, side: str) -> None:
        end = self.end(side)
        if len(end.conn.stream_ids()) >= 8:
            return
        sid = end.conn.open_stream(80)
        self.sent[(side, sid)] = bytearray()
        self.open_sending.append((side, sid))

    def accept_opened(self) -> None:
        """A side may send on a stream the peer opened once the OPEN arrived."""
        for name in ("broker", "agent"):
            for sid, _ in self.end(name).opened:
                if (name, sid) not in self.sent:
                    self.sent[(name, sid)] = bytearray()
                    self.open_sending.append((name, sid))

    @rule(pick=st.integers(0, 1000), size=st.integers(0, 200_000), fin=st.booleans())
    def send(self, pick: int, size: int, fin: bool) -> None:
        self.accept_opened()
        if not self.open_sending:
            return
        name, sid = self.open_sending[pick % len(self.open_sending)]
        data = os.urandom(size)
        self.end(name).conn.send_data(sid, data, end_stream=fin)
        self.sent[(name, sid)] += data
        if fin:
            self.open_sending.remove((name, sid))

    @rule(side=st.sampled_from(["broker", "agent"]), limit=st.integers(0, 100_000))
    def transmit(self, side: str, limit: int) -> None:
        self.pair.transmit(self.end(side), limit)

    @rule(side=st.sampled_from(["broker", "agent"]))
    def acknowledge(self, side: str) -> None:
        self.end(side).acknowledge()

    @rule(to_agent=st.integers(0, 50_000), to_broker=st.integers(0, 50_000), settle=st.booleans())
    def cut(self, to_agent: int, to_broker: int, settle: bool) -> None:
        self.cuts += 1
        self.pair.cut(to_agent, to_broker)
        for end in self.pair.ends():
            end.conn.resume()
        if settle:
            self.pair.settle()

    @invariant()
    def bounded_and_in_order(self) -> None:
        for end in self.pair.ends():
            assert end.conn.state is not State.CLOSED, [e for e in end.events if isinstance(e, ConnectionTerminated)]
            assert end.conn.replay_bytes <= (1 << 20)
            assert resets(end) == []
        for (name, sid), data in self.sent.items():
            receiver = self.pair.agent if name == "broker" else self.pair.broker
            got = receiver.received.get(sid, b"")
            assert data[:len(got)] == got

    def teardown(self) -> None:
        self.pair.settle()
        self.accept_opened()
        for name, sid in list(self.open_sending):
            self.end(name).conn.end_stream(sid)
        self.pair.settle()
        for (name, sid), data in self.sent.items():
            receiver = self.pair.agent if name == "broker" else self.pair.broker
            assert receiver.received.get(sid, b"") == data
            assert sid in receiver.ended
        assert_clean(self.pair)


Drops.TestCase.settings = settings(max_examples=int(os.environ.get("BATCHTUNNEL_RESUME_EXAMPLES", "150")),
                                   stateful_step_count=30, deadline=None)
test_drops = Drops.TestCase


def test_streams_waiting_for_replay_room_resume_in_order() -> None:
    """Streams paused by the replay cap at the drop restart after their replay, not before it."""
    pair = LossyPair(broker=Settings(initial_window=65536, session_window=131072),
                     agent=Settings(initial_window=262144, max_frame=16384))
    a, b = pair.broker.conn.open_stream(80), pair.broker.conn.open_stream(80)
    pair.settle()
    data_a, data_b = os.urandom(200_000), os.urandom(100_000)
    pair.broker.conn.send_data(a, data_a)
    pair.broker.conn.send_data(b, data_b)
    assert pair.broker.conn.replay_bytes == 131072  # the cap: the rest of a, and all of b, wait
    pair.cut(to_agent=70_000)  # the agent got part of what was sent; nothing confirmed
    pair.resume()
    assert bytes(pair.agent.received[a]) == data_a
    assert bytes(pair.agent.received[b]) == data_b
