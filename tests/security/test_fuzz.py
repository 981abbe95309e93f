"""Fuzzing the wire parser and the broker's live agent endpoint with frame sequences (Hypothesis).

The default run has a short version of each; the long run is one command (docs/security.md):

    scripts/fuzz.sh                 # BATCHTUNNEL_FUZZ_EXAMPLES (default 5000) examples each

Frames are built from parts that are each valid or not (types beyond the protocol, undefined flags,
stream ids of either side or never opened, lengths that lie), which reaches far more of the parser
than random bytes do.
"""

from __future__ import annotations

import asyncio
import itertools
import os

import pytest
from batchtunnel.wire import Connection, ConnectionTerminated, ErrorCode, Settings, Side, State
from batchtunnel.wire.frames import HEADER, FrameType, encode_goaway, encode_open, encode_u32
from batchtunnel.wire.hello import encode_hello
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tunnel import client

from .conftest import Arena, back_to_baseline
from .hostile import HostileAgent

SHORT = 25
LONG = int(os.environ.get("BATCHTUNNEL_FUZZ_EXAMPLES", "5000"))
DOCUMENTED = {int(code) for code in ErrorCode}
CLOSE_CODES = {1000} | {4000 + code for code in DOCUMENTED if code}
KIB = 1024
MAX_FRAME = 256 * KIB

stream_ids = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 1001, 1002, 2**31 - 1, 2**31, 2**32 - 1])
payloads = st.one_of(
    st.binary(max_size=64),
    st.builds(encode_open, st.integers(1, 65535)),
    st.builds(encode_u32, st.integers(0, 2**32 - 1)),
    st.builds(encode_goaway, st.integers(0, 2**31 - 1), st.integers(0, 20), st.text(max_size=20)),
    st.just(b"\x00" * 8),
    st.builds(lambda n: b"d" * n, st.integers(0, 70 * KIB)),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    type_ = draw(st.one_of(st.sampled_from(list(FrameType)), st.integers(7, 255)))
    flags = draw(st.sampled_from([0, 0, 1, 2, 0xFF]))
    sid = draw(stream_ids)
    payload = draw(payloads)
    length = len(payload) if draw(st.booleans()) or not payload else draw(st.integers(0, 2**32 - 1))
    return bytes(HEADER.pack(int(type_), flags, sid, length)) + payload


sequences = st.lists(frames(), min_size=1, max_size=12)


def check_parser(sequence: list[bytes], cuts: list[int]) -> None:
    conn = Connection(Side.BROKER, Settings(initial_window=64 * KIB, max_window=256 * KIB,
                                            session_window=512 * KIB))
    data = encode_hello_frame() + b"".join(sequence)
    positions = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(positions):
        conn.receive_data(data[start:end])  # must never raise
        conn.data_to_send()
    terminated = [e for e in conn.events_received() if isinstance(e, ConnectionTerminated)]
    for event in terminated:
        assert event.code in DOCUMENTED or not event.local  # a peer's GOAWAY may carry any code (§6)
    if terminated:
        assert conn.state is State.CLOSED
    assert conn.receive_windows <= conn.settings.session_window


def encode_hello_frame() -> bytes:
    hello = encode_hello(Settings())
    return bytes(HEADER.pack(FrameType.HELLO, 0, 0, len(hello))) + hello


@given(sequences, st.lists(st.integers(0, 10**7), max_size=6))
@settings(max_examples=SHORT * 8, deadline=None)
def test_wire_parser_short(sequence: list[bytes], cuts: list[int]) -> None:
    check_parser(sequence, cuts)


@pytest.mark.fuzz
@given(sequences, st.lists(st.integers(0, 10**7), max_size=6))
@settings(max_examples=LONG * 8, deadline=None)
def test_wire_parser_long(sequence: list[bytes], cuts: list[int]) -> None:
    check_parser(sequence, cuts)


def unfinished(data: bytes) -> int:
    """Bytes the broker still waits for to end the last frame of ``data``, as its parser reads it (a
    lying length swallows what follows). Sending them lets the probe after the sequence be a frame,
    rather than wait out the heartbeat timeout inside a payload."""
    offset = 0
    while offset + HEADER.size <= len(data):
        offset += HEADER.size + HEADER.unpack_from(data, offset)[3]
    if offset < len(data):
        return HEADER.size - (len(data) - offset)  # a header cut short (its length unknown yet)
    return offset - len(data)


async def throw_at_broker(arena: Arena, sequence: list[bytes], split: bool) -> None:
    try:
        agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca)
    except ConnectionResetError:
        # Seen once in a 5000-example run: a loopback connection reset during TLS, before any of
        # the example was sent; not reproduced in 3000 more with the broker at DEBUG, which logged
        # nothing about it. One more try keeps such a reset from passing for a finding.
        agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca)
    data = b"".join(sequence)
    missing = unfinished(data)
    filler = b"\x00" * missing if missing <= MAX_FRAME else b""  # past MAX_FRAME the broker already gave up
    try:
        if split:
            for message in sequence:
                await agent.send(message)
        else:
            await agent.send(data)
        if filler:
            await agent.send(filler)
        # Whatever happened, the session either still answers or was ended with a documented code.
        try:
            await asyncio.wait_for(agent.alive(), 5)
        except Exception:
            # The broker ended the session: with a GOAWAY of a documented code and the matching close
            # code, or, after a GOAWAY of the hostile agent's own, with a normal close.
            goaway, close_code = await agent.closed_with()
            if goaway is None:
                assert close_code in CLOSE_CODES
            else:
                assert goaway in DOCUMENTED and close_code == (4000 + goaway if goaway else 1000)
    finally:
        await agent.close()
    assert arena.broker.proc is not None and arena.broker.proc.alive()
    assert await client.echo(arena.healthy_port, b"still healthy") == b"still healthy"


def check_endpoint(arena: Arena, sequence: list[bytes], split: bool) -> None:
    asyncio.run(throw_at_broker(arena, sequence, split))


@given(sequence=sequences, split=st.booleans())
@settings(max_examples=SHORT, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_agent_endpoint_short(arena: Arena, sequence: list[bytes], split: bool) -> None:
    check_endpoint(arena, sequence, split)


@pytest.mark.fuzz
@given(sequence=sequences, split=st.booleans())
@settings(max_examples=LONG, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_agent_endpoint_long(arena: Arena, sequence: list[bytes], split: bool) -> None:
    check_endpoint(arena, sequence, split)


def test_the_broker_is_back_to_baseline_after_the_fuzzing(arena: Arena) -> None:
    asyncio.run(back_to_baseline(arena))
