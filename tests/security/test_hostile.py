"""Hostile input against a live broker while a healthy agent moves data (issue #3's suite).

For each attack: the offender gets the documented answer (HTTP status, or GOAWAY code and WebSocket
close code 4000 + code), the healthy tunnel's downloads keep completing with sha256 equality, and the
broker returns to its baseline (no connection waiting, no stray session or stream, no extra fd).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import ssl

import pytest
from batchtunnel.wire import ErrorCode
from batchtunnel.wire.frames import HEADER, FrameType
from batchtunnel.wire.resume import ResumeEntry, encode_resume

from tests.support.frames import Frame, data_frame, frame, open_frame

from .conftest import (
    AUTH_FAILURE_LIMIT,
    HANDSHAKE_TIMEOUT,
    MAX_UNAUTHENTICATED,
    Arena,
    back_to_baseline,
    eventually,
    healthy_traffic,
)
from .hostile import HostileAgent, Refused, reset_code

MAX_FRAME = 256 * 1024
INITIAL_WINDOW = 256 * 1024


def hostile_secret(arena: Arena) -> str:
    return arena.hostile_token.partition(".")[2]


# ---------------------------------------------------------------- credentials


@pytest.mark.parametrize("case", ["no token", "not a bearer token", "wrong secret", "another tunnel's secret",
                                  "deleted tunnel's token", "malformed token"])
async def test_a_bad_credential_gets_401_and_nothing_else(arena: Arena, case: str) -> None:
    source = f"127.0.0.{10 + ['no', 'not', 'wrong', 'another', 'deleted', 'malformed'].index(case.split()[0])}"
    if case == "deleted tunnel's token":
        doomed = arena.broker.client.create_tunnel("doomed")
        arena.broker.client.delete_tunnel(doomed["id"])
        token: str | None = doomed["token"]
    else:
        token = {
            "no token": None,
            "not a bearer token": None,
            "wrong secret": arena.healthy_id + ".AAAAwrongsecretAAAA",
            "another tunnel's secret": arena.healthy_id + "." + hostile_secret(arena),
            "malformed token": "x" * 300,
        }[case]
    async with healthy_traffic(arena):
        with pytest.raises(Refused) as refused:
            if case == "not a bearer token":
                await HostileAgent.open(arena.url, None, arena.ca, source,
                                        headers={"Authorization": "Basic " + arena.hostile_token})
            else:
                await HostileAgent.open(arena.url, token, arena.ca, source)
    assert refused.value.status == 401
    assert arena.healthy_id not in refused.value.body or case == "deleted tunnel's token"
    await back_to_baseline(arena)


# ---------------------------------------------------------------- broken protocol from an authenticated agent


async def broker_opened_stream(arena: Arena, agent: HostileAgent) -> tuple[int, asyncio.StreamWriter]:
    """Connect to the hostile tunnel's hub-side port: the broker opens a stream to the hostile agent."""
    _, writer = await asyncio.open_connection("127.0.0.1", arena.hostile_port)
    frames = await agent.frames_until(lambda f: f.type == FrameType.OPEN)
    return frames[-1].stream_id, writer


@pytest.mark.parametrize("case, code", [
    ("random bytes", ErrorCode.PROTOCOL_ERROR),
    ("oversized frame", ErrorCode.FRAME_TOO_LARGE),
    ("data on a stream never opened", ErrorCode.PROTOCOL_ERROR),
    ("open with the broker's stream ids", ErrorCode.PROTOCOL_ERROR),
    ("window overflow", ErrorCode.FLOW_CONTROL_ERROR),
])
async def test_a_protocol_violation_ends_only_the_offenders_session(arena: Arena, case: str, code: int) -> None:
    async with healthy_traffic(arena):
        agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca)
        writer = None
        if case == "random bytes":
            await agent.send(b"\xff" + os.urandom(4096))
        elif case == "oversized frame":
            await agent.send(HEADER.pack(FrameType.DATA, 0, 2, 4 * MAX_FRAME) + b"x" * 1000)
        elif case == "data on a stream never opened":
            await agent.send(data_frame(1001, b"hello"))
        elif case == "open with the broker's stream ids":
            await agent.send(open_frame(3, 1))
        else:
            stream, writer = await broker_opened_stream(arena, agent)  # writer reads nothing
            await agent.overrun_window(stream, MAX_FRAME)
        goaway, close_code = await agent.closed_with()
        if writer is not None:
            writer.close()
    assert (goaway, close_code) == (code, 4000 + code)
    await back_to_baseline(arena)
    assert await arena_is_usable(arena)


@pytest.mark.parametrize("case, code", [
    ("data before its RESUME", ErrorCode.PROTOCOL_ERROR),
    ("a RESUME naming a stream never opened", ErrorCode.PROTOCOL_ERROR),
    ("a truncated RESUME", ErrorCode.PROTOCOL_ERROR),
    ("a RESUME on a new session", ErrorCode.PROTOCOL_ERROR),
])
async def test_a_hostile_resumption_ends_only_the_offenders_session(arena: Arena, case: str, code: int) -> None:
    """An agent with the tunnel's token drops its link and comes back naming its session (or another),
    then breaks the resumption."""
    async with healthy_traffic(arena):
        first = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca, resume=True)
        assert first.session_id
        first.ws.transport.abort()  # the link dies: the broker holds the session
        await eventually(lambda: arena.broker.metrics()["batchtunnel_agents_suspended"] == 1, 15,
                         "the broker to hold the session")
        named = "f" * 32 if case == "a RESUME on a new session" else first.session_id
        agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca, hello=False,
                                        headers={"Batchtunnel-Session": named})
        assert (agent.session_id == named) == (case != "a RESUME on a new session")
        record = encode_resume(0, [ResumeEntry(99, 0, 65536, False, False)], MAX_FRAME)[0]
        await agent.send({
            "data before its RESUME": data_frame(2, b"early"),
            "a RESUME naming a stream never opened": frame(FrameType.RESUME, 0, record, flags=1),
            "a truncated RESUME": frame(FrameType.RESUME, 0, record[:-3], flags=1),
            "a RESUME on a new session": frame(FrameType.RESUME, 0, encode_resume(0, [], MAX_FRAME)[0], flags=1),
        }[case])
        goaway, close_code = await agent.closed_with()
    assert (goaway, close_code) == (code, 4000 + code)
    await back_to_baseline(arena)
    assert await arena_is_usable(arena)


async def test_data_after_end_of_stream_resets_that_stream_only(arena: Arena) -> None:
    async with healthy_traffic(arena):
        agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca)
        stream, writer = await broker_opened_stream(arena, agent)
        await agent.send(data_frame(stream, b"the end", fin=True) + data_frame(stream, b"and more"))
        frames = await agent.frames_until(lambda f: f.type == FrameType.RESET and f.stream_id == stream)
        assert reset_code(frames[-1]) == ErrorCode.STREAM_CLOSED
        assert await agent.alive()  # a stream error, not a connection error
        writer.close()
        await agent.close()
    await back_to_baseline(arena)


async def test_a_flood_of_stream_opens_is_refused_stream_by_stream(arena: Arena) -> None:
    count = 2000
    async with healthy_traffic(arena):
        agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca)
        # Agent-opened streams name a service; this broker has no --hub-api, and past --max-streams the
        # wire refuses them by itself. Either way each OPEN gets RESET REFUSED_STREAM.
        await agent.send(b"".join(open_frame(2 * i, 1) for i in range(1, count + 1)))
        resets: list[Frame] = []

        def all_reset(f: Frame) -> bool:
            if f.type == FrameType.RESET:
                resets.append(f)
            return len(resets) == count

        await agent.frames_until(all_reset, 30)
        assert sorted(f.stream_id for f in resets) == [2 * i for i in range(1, count + 1)]
        assert {reset_code(f) for f in resets} == {ErrorCode.REFUSED_STREAM}
        assert await agent.alive()
        await agent.close()
    await back_to_baseline(arena)


# ---------------------------------------------------------------- before authentication


async def test_a_slowloris_handshake_is_dropped(arena: Arena) -> None:
    ctx = ssl.create_default_context(cafile=arena.ca)
    async with healthy_traffic(arena):
        reader, writer = await asyncio.open_connection("127.0.0.1", arena.broker.agent_port, ssl=ctx,
                                                       server_hostname="localhost")
        writer.write(b"GET /agent HTTP/1.1\r\nHost: localhost\r\n")
        dropped = asyncio.ensure_future(reader.read())
        sent = 0
        while not dropped.done() and sent < 100:  # one byte every 0.2 s: never a whole head
            writer.write(b"X")
            sent += 1
            await asyncio.wait([dropped], timeout=0.2)
        assert dropped.done(), f"still connected after {sent} slow bytes ({sent * 0.2:.0f} s)"
        assert await dropped == b""
        writer.close()
    await back_to_baseline(arena)


async def test_thousands_of_half_open_connections_are_shed(arena: Arena) -> None:
    count = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 3 * count)), hard))
    held: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    async with healthy_traffic(arena):
        for _ in range(count):  # TCP only: no TLS ClientHello ever comes
            reader, writer = await asyncio.open_connection("127.0.0.1", arena.broker.agent_port)
            held.append(writer)
            readers.append(reader)

        async def dropped(reader: asyncio.StreamReader) -> bool:
            try:
                return await reader.read() == b""
            except ConnectionResetError:
                return True

        results = await asyncio.wait_for(asyncio.gather(*(dropped(r) for r in readers)), 10 * HANDSHAKE_TIMEOUT)
        assert all(results)
    for writer in held:
        writer.close()
    await back_to_baseline(arena)


async def test_the_unauthenticated_connection_cap_closes_the_next_connection_before_tls(arena: Arena) -> None:
    held = []
    async with healthy_traffic(arena):
        for i in range(MAX_UNAUTHENTICATED):  # counted from the TCP accept: no TLS state for the crowd
            source = "127.0.0.31" if i % 2 else "127.0.0.32"  # one address may hold only half the cap
            held.append(await asyncio.open_connection("127.0.0.1", arena.broker.agent_port,
                                                      local_addr=(source, 0)))
        await eventually(lambda: arena.broker.metrics()["batchtunnel_unauthenticated_connections"]
                         == MAX_UNAUTHENTICATED, 10, "every held connection to count as waiting")
        refused_before = arena.broker.metrics()['batchtunnel_refused_total{cause="crowd"}']
        with pytest.raises((OSError, ssl.SSLError)):  # closed at once: nothing can be said before TLS
            await HostileAgent.open(arena.url, arena.hostile_token, arena.ca, "127.0.0.30")
        assert arena.broker.metrics()['batchtunnel_refused_total{cause="crowd"}'] == refused_before + 1
        assert "connections are already waiting to authenticate" in arena.broker.proc.log()  # type: ignore[union-attr]
        for _, writer in held:
            writer.close()
        await eventually(lambda: arena.broker.metrics()["batchtunnel_unauthenticated_connections"] == 0,
                         10, "the held connections to be released")
        agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca, "127.0.0.30")
        assert await agent.alive()
        await agent.close()
    await back_to_baseline(arena)


async def test_one_address_holding_connections_open_keeps_no_agent_out(arena: Arena) -> None:
    """~300 bare TCP connections from one address, reopened as they are closed, kept every new agent out
    for as long as they lasted. Now one address holds at most half the cap: an agent from another
    address gets in while the crowd goes on, and the crowd's excess is closed at the accept."""
    stop = asyncio.Event()
    refused_before = arena.broker.metrics().get('batchtunnel_refused_total{cause="address_share"}', 0.0)

    async def crowd() -> None:
        async def hold() -> None:
            while not stop.is_set():
                try:
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", arena.broker.agent_port, local_addr=("127.0.0.60", 0))
                except OSError:
                    await asyncio.sleep(0.01)
                    continue
                with contextlib.suppress(OSError):
                    await reader.read()  # until the broker closes it (the cap, or the handshake timeout)
                writer.close()

        await asyncio.gather(*(hold() for _ in range(300)))

    async with healthy_traffic(arena):
        flood = asyncio.create_task(crowd())
        await eventually(lambda: arena.broker.metrics()["batchtunnel_unauthenticated_connections"]
                         >= MAX_UNAUTHENTICATED // 2, 10, "the crowd to take its share")
        agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca, "127.0.0.61")
        assert await agent.alive()
        await agent.close()
        assert arena.broker.metrics()['batchtunnel_refused_total{cause="address_share"}'] > refused_before
        stop.set()
        await asyncio.wait_for(flood, 4 * HANDSHAKE_TIMEOUT)
    await back_to_baseline(arena)


async def test_repeated_failures_from_one_address_are_blocked_with_retry_after(arena: Arena) -> None:
    bad = arena.hostile_id + ".not-the-secret"
    async with healthy_traffic(arena):
        for _ in range(AUTH_FAILURE_LIMIT):
            with pytest.raises(Refused) as refused:
                await HostileAgent.open(arena.url, bad, arena.ca, "127.0.0.40")
            assert refused.value.status == 401
        # Blocked now: even the right token is not looked at from that address, for a while.
        with pytest.raises(Refused) as refused:
            await HostileAgent.open(arena.url, arena.hostile_token, arena.ca, "127.0.0.40")
        assert refused.value.status == 429 and refused.value.retry_after == "1"
        assert "too many failed authentications" in refused.value.body
        # Another address is not affected.
        other = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca, "127.0.0.41")
        assert await other.alive()
        await other.close()
        # After the block, the right token gets in again.
        agent = await _open_when_unblocked(arena, "127.0.0.40")
        assert await agent.alive()
        await agent.close()
    assert "is refused for 1 s after repeated failures" in arena.broker.proc.log()  # type: ignore[union-attr]
    await back_to_baseline(arena)


async def upgrade_status(arena: Arena, source: str, headers: list[tuple[str, str]]) -> int:
    """Send a WebSocket upgrade request with exactly ``headers`` (duplicates included); the status."""
    ctx = ssl.create_default_context(cafile=arena.ca)
    reader, writer = await asyncio.open_connection("localhost", arena.broker.agent_port, ssl=ctx,
                                                   local_addr=(source, 0))
    head = ["GET /agent HTTP/1.1", f"Host: localhost:{arena.broker.agent_port}", "Upgrade: websocket",
            "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers)]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status.split()[1])


async def test_duplicate_credential_headers_get_400_and_count_as_failures(arena: Arena) -> None:
    twice = [("Authorization", f"Bearer {arena.hostile_token}"), ("Authorization", "Bearer tx.y")]
    resume_twice = [("Authorization", f"Bearer {arena.hostile_token}"), ("Batchtunnel-Session", "a"),
                    ("Batchtunnel-Session", "b")]
    log_before = len(arena.broker.proc.log())  # type: ignore[union-attr]
    async with healthy_traffic(arena):
        statuses = [await upgrade_status(arena, "127.0.0.42", twice if i % 2 else resume_twice)
                    for i in range(AUTH_FAILURE_LIMIT)]
        assert statuses == [400] * AUTH_FAILURE_LIMIT
        assert await upgrade_status(arena, "127.0.0.42", twice[:1]) == 429  # counted as failures
    log = arena.broker.proc.log()[log_before:]  # type: ignore[union-attr]
    assert "Traceback" not in log and "MultipleValuesError" not in log
    assert log.count("given twice") == AUTH_FAILURE_LIMIT  # one line each
    await back_to_baseline(arena)


async def test_a_valid_token_between_guesses_does_not_reset_the_count(arena: Arena) -> None:
    bad = arena.hostile_id + ".not-the-secret"
    for _ in range(AUTH_FAILURE_LIMIT):
        with pytest.raises(Refused) as refused:
            await HostileAgent.open(arena.url, bad, arena.ca, "127.0.0.43")
        assert refused.value.status == 401
        if _ < AUTH_FAILURE_LIMIT - 1:  # one's own token, between guesses
            agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca, "127.0.0.43")
            await agent.close()
    with pytest.raises(Refused) as refused:
        await HostileAgent.open(arena.url, bad, arena.ca, "127.0.0.43")
    assert refused.value.status == 429
    await back_to_baseline(arena)


async def _open_when_unblocked(arena: Arena, source: str) -> HostileAgent:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        try:
            return await HostileAgent.open(arena.url, arena.hostile_token, arena.ca, source)
        except Refused as exc:
            if exc.status != 429 or loop.time() > deadline:
                raise
            await asyncio.sleep(float(exc.retry_after or 1))


async def arena_is_usable(arena: Arena) -> bool:
    """The hostile tunnel's credential still works after its session was thrown out."""
    agent = await HostileAgent.open(arena.url, arena.hostile_token, arena.ca)
    ok = await agent.alive()
    await agent.close()
    await back_to_baseline(arena)
    return ok
