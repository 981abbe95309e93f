"""Soak with an attacker: healthy agents keep downloading while hostile traffic comes and goes.

    .venv/bin/python -m bench.soak [--minutes 30] [--phase 60] [--agents 50] [--ci] [--write-docs]

Run from the repository root; ``--ci`` is the short version (about 2 minutes, 15 s phases). The broker
runs as shipped (TLS, uvloop, INFO log) except ``--resume-grace 5``: a hostile resumption leaves a
session that the broker holds for the grace (60 s shipped), longer than a --ci phase, and the broker
counts as back to its baseline only once it is gone. The agents (``--agents``, 10 per process,
bench/idle_agents.py with the shipped reconnect settings) each have their own tunnel and exposure of
the target (tests/support/target_server.py); one thread per tunnel downloads 8 MiB again and again,
each tunnel with its own seed, every byte compared with ``block(seed)`` (a byte from another tunnel
would show).

Rounds until ``--minutes`` run out: a phase without attack, a phase with attack, then a pause until
the broker's /metrics say it is calm again (no connection waiting, only the healthy sessions; counted
in neither phase). The attack runs in its own process (``--attack PLAN``), so it takes neither the
downloaders' GIL nor their threads, but it shares this machine's cores. It mounts every class that
tests/security exercises, all at once, each from its own 127.0.0.x addresses (never the agents'
127.0.0.1, so back-offs for failed logins never touch them), each with a tunnel of its own where it
needs one. Figures: healthy aggregate MB/s without and during attack and their ratio; failed and
corrupted healthy downloads; the broker's peak RSS and descriptors (/proc, every 0.2 s); its RSS
before the first attack and after the soak (downloads stopped, attackers gone, /metrics back to
baseline, trimmed); how many of each attack class were mounted and how the broker answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import resource
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from batchtunnel.client import BrokerClient
from batchtunnel.wire import ErrorCode, Settings
from batchtunnel.wire.frames import HEADER, FrameType
from batchtunnel.wire.resume import ResumeEntry, encode_resume

from tests.security.hostile import HostileAgent, Refused, reset_code
from tests.support.frames import Frame, data_frame, frame, open_frame, ping_frame
from tests.support.processes import Proc, ProcessGroup, wait_until

from .harness import (
    MB,
    MIB,
    PY,
    ROOT,
    download,
    make_pki,
    run_line,
    start_broker,
    start_idle_agents,
    start_target,
    status_kib,
    write_docs,
)
from .storm import metrics

DOWNLOAD = 8 * MIB
AGENTS_PER_PROCESS = 10
FIRST_SEED = 100  # tunnel i downloads block(FIRST_SEED + i)
RESUME_GRACE = 5
HANDSHAKE_TIMEOUT = 10.0  # the broker's default, for what the attack expects
API_TIMEOUT = 10.0  # likewise
RSS_SLACK_MIB = 16
STALL_TIMEOUT = 30.0  # a healthy download silent this long fails

MAX_FRAME = Settings().max_frame
OPENS = 2000
FLOOD_SECONDS = 3.0
WIRE_PINGS = ping_frame() * (MIB // len(ping_frame()))  # ~1 MiB of wire PINGs per message
WS_PING = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125  # masked, as a client must
WS_PINGS = WS_PING * (MIB // len(WS_PING))
SOURCES = {"protocol": "127.0.0.10", "open_flood": "127.0.0.11", "wire_ping": "127.0.0.12",
           "ws_ping": "127.0.0.13", "resume": "127.0.0.14", "half_open": "127.0.0.30", "api": "127.0.0.40"}
CREDENTIAL_SOURCES = [f"127.0.0.{100 + i}" for i in range(16)]  # few enough that they get blocked (429)
SLOWLORIS_SOURCES = [f"127.0.0.{20 + i}" for i in range(8)]
CLASSES = {  # attack class -> what the report calls it
    "credentials": "bad, malformed or duplicate credentials",
    "protocol": "protocol violations",
    "open_flood": f"OPEN floods ({OPENS} each)",
    "wire_ping": f"wire PING floods never read ({FLOOD_SECONDS:.0f} s each)",
    "ws_ping": f"WebSocket PING floods never read ({FLOOD_SECONDS:.0f} s each)",
    "slowloris": "slowloris handshakes",
    "half_open": "half-open TCP connections",
    "api": "half-sent admin API requests",
    "resume": "hostile resumptions",
}
CREDENTIAL_CASES = ("no token", "not a bearer token", "wrong secret", "another tunnel's secret",
                    "deleted tunnel's token", "malformed token", "Authorization twice", "session header twice")
PROTOCOL_CASES = ("random bytes", "oversized frame", "data on a stream never opened",
                  "open with the broker's stream ids", "window overflow", "data after FIN")
RESUME_CASES = ("data before its RESUME", "a RESUME naming a stream never opened", "a truncated RESUME",
                "a RESUME on a new session")


# ---------------------------------------------------------------- the attack (its own process)


@dataclasses.dataclass
class Plan:
    """What the attack process is told (as JSON): where the broker is, what to use, for how long."""

    url: str
    ca: str
    agent_port: int
    api_port: int
    seconds: float
    healthy_ids: list[str]
    tokens: dict[str, str]  # attack class -> the token of its own hostile tunnel
    hub_port: int  # hub-side port of the protocol attacker's tunnel: connections become OPENs to it
    deleted_token: str
    out: str  # where the attack writes what it mounted


class Unexpected(Exception):
    """The broker answered otherwise than docs/security.md says."""


class Attacker:
    """Every attack class of tests/security, each in a loop of its own, recording how each ended."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.mounted: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.flooded_mib: defaultdict[str, float] = defaultdict(float)
        self.unexpected: list[str] = []

    async def keep(self, cls: str, episode: Callable[[int], Awaitable[str]], pause: float) -> None:
        """Mount ``episode`` again and again, ``pause`` s apart."""
        task = asyncio.current_task()
        if task is not None:
            task.set_name(cls)  # named in the report if it ever ignores its cancellation
        n = 0
        while True:
            self.mounted[cls] += 1
            try:
                outcome = await episode(n)
            except Unexpected as exc:
                outcome = "UNEXPECTED"
                if len(self.unexpected) < 20:
                    self.unexpected.append(f"{cls}: {exc}")
            except Refused as exc:
                outcome = f"HTTP {exc.status}"
            except Exception as exc:  # refused at the accept (the crowd), reset, timed out: recorded by type
                outcome = type(exc).__name__
            self.outcomes[f"{cls}: {outcome}"] += 1
            n += 1
            await asyncio.sleep(pause)

    async def agent(self, cls: str, **kwargs: Any) -> HostileAgent:
        return await HostileAgent.open(self.plan.url, self.plan.tokens[cls], self.plan.ca, SOURCES[cls], **kwargs)

    async def credentials(self, n: int) -> str:
        p = self.plan
        case = CREDENTIAL_CASES[n % len(CREDENTIAL_CASES)]
        source = CREDENTIAL_SOURCES[n % len(CREDENTIAL_SOURCES)]
        valid = p.tokens["protocol"]
        if case.endswith("twice"):
            twice = ([("Authorization", "Bearer tx.y")] if case == "Authorization twice"
                     else [("Batchtunnel-Session", "a"), ("Batchtunnel-Session", "b")])
            status = await raw_upgrade(p, source, [("Authorization", f"Bearer {valid}"), *twice])
            expected = {400, 429}
        else:
            victim = p.healthy_ids[n % len(p.healthy_ids)]  # guesses aimed at the healthy tunnels
            token, headers = {
                "no token": (None, None),
                "not a bearer token": (None, {"Authorization": "Basic " + valid}),
                "wrong secret": (victim + ".AAAAwrongsecretAAAA", None),
                "another tunnel's secret": (victim + "." + valid.partition(".")[2], None),
                "deleted tunnel's token": (p.deleted_token, None),
                "malformed token": ("x" * 300, None),
            }[case]
            try:
                agent = await HostileAgent.open(p.url, token, p.ca, source, headers=headers)
            except Refused as exc:
                status = exc.status
            else:
                agent.ws.transport.abort()
                raise Unexpected(f"{case}: let in")
            expected = {401, 429}
        if status not in expected:
            raise Unexpected(f"{case}: HTTP {status}")
        return f"HTTP {status}"

    async def protocol(self, n: int) -> str:
        case = PROTOCOL_CASES[n % len(PROTOCOL_CASES)]
        agent = await self.agent("protocol")
        writer = None
        try:
            stream = 0
            if case in ("window overflow", "data after FIN"):  # on a stream the broker opened
                _, writer = await asyncio.open_connection("127.0.0.1", self.plan.hub_port)
                stream = (await agent.frames_until(lambda f: f.type == FrameType.OPEN))[-1].stream_id
            if case == "data after FIN":
                await agent.send(data_frame(stream, b"the end", fin=True) + data_frame(stream, b"and more"))
                frames = await agent.frames_until(lambda f: f.type == FrameType.RESET and f.stream_id == stream)
                if reset_code(frames[-1]) != ErrorCode.STREAM_CLOSED or not await agent.alive():
                    raise Unexpected(f"{case}: RESET {reset_code(frames[-1])}, or the session died")
                return "RESET STREAM_CLOSED, session kept"
            code, message = {
                "random bytes": (ErrorCode.PROTOCOL_ERROR, b"\xff" + os.urandom(4096)),
                "oversized frame": (ErrorCode.FRAME_TOO_LARGE,
                                    HEADER.pack(FrameType.DATA, 0, 2, 4 * MAX_FRAME) + b"x" * 1000),
                "data on a stream never opened": (ErrorCode.PROTOCOL_ERROR, data_frame(1001, b"hello")),
                "open with the broker's stream ids": (ErrorCode.PROTOCOL_ERROR, open_frame(3, 1)),
                "window overflow": (ErrorCode.FLOW_CONTROL_ERROR, b""),
            }[case]
            if case == "window overflow":  # the hub-side writer reads nothing
                await agent.overrun_window(stream, MAX_FRAME)
            else:
                await agent.send(message)
            return await ended_with(agent, case, code)
        finally:
            if writer is not None:
                writer.transport.abort()
            agent.ws.transport.abort()

    async def open_flood(self, n: int) -> str:
        agent = await self.agent("open_flood")
        try:
            await agent.send(OPEN_FLOOD)
            resets: list[Frame] = []

            def all_reset(f: Frame) -> bool:
                if f.type == FrameType.RESET:
                    resets.append(f)
                return len(resets) == OPENS

            await agent.frames_until(all_reset, 30)
            if {reset_code(f) for f in resets} != {ErrorCode.REFUSED_STREAM} or not await agent.alive():
                raise Unexpected(f"RESET codes {sorted({reset_code(f) for f in resets})}, or the session died")
            await asyncio.wait_for(agent.close(), 5)
            return "all refused, session kept"
        finally:
            agent.ws.transport.abort()

    async def wire_ping(self, n: int) -> str:
        """PINGs while reading nothing: the answers back up, and the broker must stop reading."""
        agent = await self.agent("wire_ping")
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while True:
                await agent.send(WIRE_PINGS)
                sent += len(WIRE_PINGS)

        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(flood(), FLOOD_SECONDS)
            return "left without reading"
        finally:
            self.flooded_mib["wire_ping"] += sent / MIB
            agent.ws.transport.abort()

    async def ws_ping(self, n: int) -> str:
        """WebSocket PINGs written raw, their PONGs never read."""
        agent = await self.agent("ws_ping")
        transport = agent.ws.transport
        transport.pause_reading()
        loop = asyncio.get_running_loop()
        deadline, written = loop.time() + FLOOD_SECONDS, 0
        try:
            while loop.time() < deadline:
                if transport.get_write_buffer_size() > 4 * MIB:  # the broker reads no faster
                    await asyncio.sleep(0.05)
                    continue
                transport.write(WS_PINGS)
                written += len(WS_PINGS)
                await asyncio.sleep(0)
            return "left without reading"
        finally:
            self.flooded_mib["ws_ping"] += written / MIB
            transport.abort()

    async def resume(self, n: int) -> str:
        """Drop a resumable session's link, come back naming it (or another), break the resumption."""
        case = RESUME_CASES[n % len(RESUME_CASES)]
        first = await self.agent("resume", resume=True)
        first.ws.transport.abort()
        if not first.session_id:
            raise Unexpected("no session id in the 101")
        await asyncio.sleep(0.2)  # the broker notices the loss and holds the session
        named = "f" * 32 if case == "a RESUME on a new session" else first.session_id
        agent = await self.agent("resume", hello=False, headers={"Batchtunnel-Session": named})
        try:
            if (agent.session_id == named) != (case != "a RESUME on a new session"):
                raise Unexpected(f"{case}: the broker named session {agent.session_id!r}")
            await agent.send({
                "data before its RESUME": data_frame(2, b"early"),
                "a RESUME naming a stream never opened": frame(FrameType.RESUME, 0, RESUME_RECORD, flags=1),
                "a truncated RESUME": frame(FrameType.RESUME, 0, RESUME_RECORD[:-3], flags=1),
                "a RESUME on a new session": frame(FrameType.RESUME, 0, encode_resume(0, [], MAX_FRAME)[0], flags=1),
            }[case])
            return await ended_with(agent, case, ErrorCode.PROTOCOL_ERROR)
        finally:
            agent.ws.transport.abort()

    async def slowloris(self, n: int, source: str) -> str:
        """A TLS connection that sends its upgrade request a byte every half second: never a whole head."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.plan.agent_port, local_addr=(source, 0),
                                                       ssl=ssl.create_default_context(cafile=self.plan.ca),
                                                       server_hostname="localhost")
        dropped = asyncio.ensure_future(reader.read())
        try:
            writer.write(b"GET /agent HTTP/1.1\r\nHost: localhost\r\n")
            while not dropped.done():
                if loop.time() - start > HANDSHAKE_TIMEOUT + 10:
                    raise Unexpected(f"still connected after {loop.time() - start:.0f} s")
                writer.write(b"X")
                await asyncio.wait([dropped], timeout=0.5)
            with contextlib.suppress(Exception):  # closed or reset: dropped either way
                dropped.result()
            return "dropped"
        finally:
            dropped.cancel()
            writer.transport.abort()

    async def held(self, port: int, source: str, send: bytes, limit: float) -> str:
        """A connection that sends ``send`` and then nothing: closed at the accept, or after the broker's timeout."""
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        start = loop.time()
        try:
            writer.write(send)
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(reader.read(), limit + 10)
        except asyncio.TimeoutError:
            raise Unexpected(f"still open after {limit + 10:.0f} s") from None
        finally:
            writer.transport.abort()
        # From the connect: one that waited in the listen backlog and was then closed at the accept is not
        # a timeout (its wait shows in the broker's log times, not here).
        return "closed at the timeout" if loop.time() - start >= limit - 0.5 else "closed before the timeout"

    async def run(self) -> dict[str, Any]:
        p = self.plan
        jobs = [self.keep("credentials", self.credentials, 0.05), self.keep("protocol", self.protocol, 0.2),
                self.keep("open_flood", self.open_flood, 1.0), self.keep("wire_ping", self.wire_ping, 2.0),
                self.keep("ws_ping", self.ws_ping, 2.0), self.keep("resume", self.resume, 0.5)]
        jobs += [self.keep("slowloris", functools.partial(self.slowloris, source=SLOWLORIS_SOURCES[i % 8]), 0.5)
                 for i in range(16)]
        # One address holds at most half the broker's 256 waiting connections: 128 held, the rest closed at once.
        jobs += [self.keep("half_open", lambda n: self.held(p.agent_port, SOURCES["half_open"], b"",
                                                            HANDSHAKE_TIMEOUT), 1.0) for _ in range(160)]
        # The API holds 64 at most (--api-max-connections), each --api-timeout; the rest are closed at once.
        half_sent = b"GET /health HTTP/1.1\r\nHost: x\r\n"  # never the end of the head
        jobs += [self.keep("api", lambda n: self.held(p.api_port, SOURCES["api"], half_sent, API_TIMEOUT), 1.0)
                 for _ in range(100)]
        tasks = [asyncio.create_task(job) for job in jobs]
        await asyncio.sleep(p.seconds)
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=30)
        report = {"mounted": self.mounted, "outcomes": self.outcomes, "flooded_mib": self.flooded_mib,
                  "unexpected": self.unexpected, "cpu_s": time.process_time(),
                  "stuck": [f"{t.get_name()}: " + " < ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in t.get_stack())
                            for t in stuck][:10]}
        Path(p.out).write_text(json.dumps(report))  # noqa: ASYNC240 (the attack is over; a small file)
        if stuck:  # an attack that ignores its cancellation: reported, and the process ends regardless
            os._exit(0)
        return report


OPEN_FLOOD = b"".join(open_frame(2 * i, 1) for i in range(1, OPENS + 1))
RESUME_RECORD = encode_resume(0, [ResumeEntry(99, 0, 65536, False, False)], MAX_FRAME)[0]


async def raw_upgrade(plan: Plan, source: str, headers: list[tuple[str, str]]) -> int:
    """The status answering a WebSocket upgrade with exactly ``headers`` (duplicates included)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", plan.agent_port, local_addr=(source, 0),
                                                   ssl=ssl.create_default_context(cafile=plan.ca),
                                                   server_hostname="localhost")
    try:
        head = ["GET /agent HTTP/1.1", f"Host: localhost:{plan.agent_port}", "Upgrade: websocket",
                "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
                *(f"{name}: {value}" for name, value in headers)]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        return int((await asyncio.wait_for(reader.readline(), 10)).split()[1])
    finally:
        writer.transport.abort()


async def ended_with(agent: HostileAgent, case: str, code: int) -> str:
    """The session must end with GOAWAY ``code`` and WebSocket close code 4000 + ``code``."""
    try:
        answer = await agent.closed_with()
    except asyncio.TimeoutError:
        raise Unexpected(f"{case}: the session was not ended within 10 s") from None
    if answer != (code, 4000 + code):
        raise Unexpected(f"{case}: GOAWAY and close code {answer}, not {(code, 4000 + code)}")
    return f"GOAWAY {ErrorCode(code).name}"


def attack_main(plan_path: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    plan = Plan(**json.loads(Path(plan_path).read_text()))
    asyncio.run(Attacker(plan).run())  # writes its report to plan.out


# ---------------------------------------------------------------- the soak


@dataclasses.dataclass
class Phase:
    kind: str  # warm-up, calm, attack, settle, pause
    start: float
    cpu_start: float
    end: float = 0.0
    cpu_end: float = 0.0
    peak_rss_kib: int = 0


class Healthy:
    """One thread per tunnel downloading DOWNLOAD bytes again and again, every byte checked; each byte
    counts for the phase current when it arrives, so a download across a phase change splits between."""

    def __init__(self, ports: list[int], phases: list[Phase], rate: float) -> None:
        self.phases = phases
        self.rate = rate  # bytes/s each thread asks for at most (0: as fast as it can)
        self.go = threading.Event()
        self.go.set()
        self.lock = threading.Lock()
        self.stopping = False
        self.busy = [False] * len(ports)
        self.done = [0] * len(ports)
        self.received: list[defaultdict[int, int]] = [defaultdict(int) for _ in ports]
        self.failed: list[str] = []
        self.corrupted: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i, port), daemon=True) for i, port in enumerate(ports)]
        for thread in self.threads:
            thread.start()

    def _run(self, i: int, port: int) -> None:
        received = self.received[i]
        bucket = [time.monotonic(), 0.0]  # when last filled, bytes allowed: at most one second's worth

        def progress(n: int) -> None:
            received[len(self.phases) - 1] += n
            if self.rate:
                now = time.monotonic()
                allowed = min(self.rate, bucket[1] + (now - bucket[0]) * self.rate) - n
                bucket[0], bucket[1] = now, allowed
                if allowed < 0:  # read nothing meanwhile: the tunnel's flow control holds the rest
                    time.sleep(-allowed / self.rate)
                    bucket[0], bucket[1] = time.monotonic(), 0.0

        while not self.stopping:
            self.go.wait()
            with self.lock:  # not after pause() has cleared it
                if not self.go.is_set() or self.stopping:
                    continue
                self.busy[i] = True
            try:
                download(port, DOWNLOAD, check=True, seed=FIRST_SEED + i, progress=progress)
                self.done[i] += 1
            except Exception as exc:
                note = f"tunnel {i}, {self.phases[-1].kind} phase {len(self.phases)}: {exc!r}"
                (self.corrupted if "corrupt" in str(exc) else self.failed).append(note)
                time.sleep(0.5)
            finally:
                self.busy[i] = False

    def bytes_in(self, index: int) -> int:
        return sum(r.get(index, 0) for r in self.received)

    def pause(self) -> None:
        """Let the downloads in flight finish, start no new one."""
        with self.lock:
            self.go.clear()
        wait_until(lambda: not any(self.busy), STALL_TIMEOUT + 10, "the healthy downloads to finish")

    def resume(self) -> None:
        self.go.set()

    def stop(self) -> None:
        self.pause()
        self.stopping = True
        self.go.set()
        for thread in self.threads:
            thread.join(5)


class Sampler:
    """The broker's RSS and open descriptors from /proc every 0.2 s: peaks overall and per phase."""

    def __init__(self, pid: int, phases: list[Phase]) -> None:
        self.pid = pid
        self.phases = phases
        self.peak_rss_kib = 0
        self.peak_fds = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                rss, fds = rss_kib(self.pid), fd_count(self.pid)
            except OSError:  # the broker is gone: the soak reports it
                return
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.peak_fds = max(self.peak_fds, fds)
            if self.phases:
                self.phases[-1].peak_rss_kib = max(self.phases[-1].peak_rss_kib, rss)


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def calm(client: BrokerClient, agents: int, idle: bool) -> dict[str, float] | None:
    """/metrics if the broker holds no waiting connection and only the healthy sessions (with ``idle``,
    no stream either), else None."""
    m = metrics(client)
    quiet = (m["batchtunnel_unauthenticated_connections"] == 0 and m["batchtunnel_agent_sessions"] == agents
             and m["batchtunnel_agents_connected"] == agents and m["batchtunnel_agents_suspended"] == 0
             and (not idle or m["batchtunnel_streams_open"] == 0))
    return m if quiet else None


class Soak:
    """The broker, the agents, the downloads, the sampler; ``run()`` does the rounds."""

    def __init__(self, args: argparse.Namespace, workdir: Path, procs: ProcessGroup) -> None:
        self.args = args
        self.workdir = workdir
        self.procs = procs
        self.phases: list[Phase] = []
        self.counts: dict[str, Counter[str]] = {"mounted": Counter(), "outcomes": Counter()}
        self.flooded_mib: defaultdict[str, float] = defaultdict(float)
        self.unexpected: list[str] = []
        self.attack_cpu = 0.0
        self.notes: list[str] = []

    def begin(self, kind: str) -> Phase:
        now, cpu = time.monotonic(), cpu_seconds(self.broker.pid)
        if self.phases:
            self.phases[-1].end, self.phases[-1].cpu_end = now, cpu
        self.phases.append(Phase(kind, now, cpu))
        return self.phases[-1]

    def mbps(self, kind: str) -> float:
        chosen = [(i, p) for i, p in enumerate(self.phases) if p.kind == kind and p.end]
        seconds = sum(p.end - p.start for _, p in chosen)
        return sum(self.healthy.bytes_in(i) for i, _ in chosen) / seconds / MB if seconds else float("nan")

    def phase_mbps(self, phase: Phase) -> float:
        return self.healthy.bytes_in(self.phases.index(phase)) / (phase.end - phase.start) / MB

    def setup(self) -> None:
        target = start_target(self.procs)
        started = start_broker(self.procs, make_pki(self.workdir / "pki"), "--resume-grace", str(RESUME_GRACE))
        self.broker, self.client = started.proc, started.client
        tunnels = [self.client.create_tunnel(f"healthy{i}") for i in range(self.args.agents)]
        self.healthy_ids = [t["id"] for t in tunnels]
        ports = [self.client.expose(t["id"], 0, target)["port"] for t in tunnels]
        tokens = [t["token"] for t in tunnels]
        for g, first in enumerate(range(0, len(tokens), AGENTS_PER_PROCESS)):
            start_idle_agents(self.procs, started.url, started.ca, tokens[first:first + AGENTS_PER_PROCESS],
                              shipped=True, name=f"agents-{g}")
        wait_until(lambda: metrics(self.client)["batchtunnel_agents_connected"] == self.args.agents, 120,
                   "the healthy agents to connect")
        hostile = {cls: self.client.create_tunnel(f"hostile-{cls}")
                   for cls in SOURCES if cls not in ("half_open", "api")}  # these two need no tunnel
        deleted = self.client.create_tunnel("deleted")
        self.client.delete_tunnel(deleted["id"])
        self.plan = Plan(started.url, started.ca, started.agent_port, started.api_port, self.args.phase,
                         self.healthy_ids, {cls: t["token"] for cls, t in hostile.items()},
                         self.client.expose(hostile["protocol"]["id"], 0, 9)["port"], deleted["token"], "")
        self.sampler = Sampler(self.broker.pid, self.phases)
        self.healthy = Healthy(ports, self.phases, self.args.rate * MB)

    def wait_calm(self, idle: bool, timeout: float) -> float:
        """Seconds until the broker is calm (see ``calm``); notes it if it is not within ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            with contextlib.suppress(Exception):  # the API may still be full of attackers' connections
                if calm(self.client, self.args.agents, idle) is not None:
                    return time.monotonic() - start
            time.sleep(0.2)
        try:
            seen = str({k.removeprefix("batchtunnel_"): v for k, v in metrics(self.client).items()
                        if "sessions" in k or "agents" in k or "unauth" in k or "streams_open" in k})
        except Exception as exc:
            seen = repr(exc)
        self.notes.append(f"not calm after {timeout:.0f} s ({time.strftime('%H:%M:%S')}): {seen}")
        return timeout

    def attack(self, number: int) -> None:
        plan = dataclasses.replace(self.plan, out=str(self.workdir / f"attack-{number}.json"))
        plan_path = self.workdir / f"attack-{number}.plan.json"
        plan_path.write_text(json.dumps(dataclasses.asdict(plan)))
        proc: Proc = self.procs.start(f"attack-{number}", [PY, "-m", "bench.soak", "--attack", str(plan_path)],
                                      cwd=ROOT)
        code = proc.wait(self.args.phase + 120)
        if code != 0:
            raise RuntimeError(f"the attack process failed ({code}):\n{proc.log()[-3000:]}")
        report = json.loads(Path(plan.out).read_text())
        for key in ("mounted", "outcomes"):
            self.counts[key].update(report[key])
        for cls, mib in report["flooded_mib"].items():
            self.flooded_mib[cls] += mib
        self.unexpected += report["unexpected"]
        self.notes += [f"attack {number}: a task ignored its cancellation: {line}" for line in report["stuck"]]
        self.attack_cpu += report["cpu_s"]

    def check_broker(self) -> None:
        if not self.broker.alive():
            raise RuntimeError(f"the broker died:\n{self.broker.log()[-5000:]}")

    def run(self) -> dict[str, float]:
        args = self.args
        deadline = time.monotonic() + args.minutes * 60
        self.setup()
        print(f"soak: {args.agents} agents in {-(-args.agents // AGENTS_PER_PROCESS)} processes, "
              f"{DOWNLOAD // MIB} MiB downloads, phases of {args.phase:g} s; logs in {self.workdir}", flush=True)
        warm = self.begin("warm-up")
        time.sleep(args.warm_up)
        self.begin("pause")
        self.healthy.pause()
        self.wait_calm(idle=True, timeout=30)
        rss_before, fds_before = rss_kib(self.broker.pid), fd_count(self.broker.pid)
        since = {t["id"]: t["agent"]["connected_since"] for t in self.client.tunnels()}
        print(f"warm-up: {self.phase_mbps(warm):.0f} MB/s; broker before the first attack (downloads paused): "
              f"RSS {rss_before / 1024:.1f} MiB, {fds_before} fds", flush=True)
        self.healthy.resume()
        rounds = 0
        while rounds == 0 or deadline - time.monotonic() > 2 * args.phase + 15:
            rounds += 1
            calm_phase = self.begin("calm")
            time.sleep(args.phase)
            attack_phase = self.begin("attack")
            self.attack(rounds)
            self.begin("settle")
            self.check_broker()
            settled = self.wait_calm(idle=False, timeout=60)
            self.check_broker()
            print(f"round {rounds}: without attack {self.phase_mbps(calm_phase):.0f} MB/s, broker CPU "
                  f"{cpu_share(calm_phase):.0%}, peak RSS {calm_phase.peak_rss_kib / 1024:.0f} MiB; during attack "
                  f"{self.phase_mbps(attack_phase):.0f} MB/s "
                  f"({self.phase_mbps(attack_phase) / max(self.phase_mbps(calm_phase), 1e-9):.2f}), broker CPU "
                  f"{cpu_share(attack_phase):.0%}, peak RSS {attack_phase.peak_rss_kib / 1024:.0f} MiB; "
                  f"calm again after {settled:.1f} s; failed/corrupted so far "
                  f"{len(self.healthy.failed)}/{len(self.healthy.corrupted)}", flush=True)
        self.begin("end")
        self.healthy.stop()
        self.wait_calm(idle=True, timeout=60)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: fd_count(self.broker.pid) <= fds_before, 30, "the broker's descriptors")
        start = time.monotonic()
        with contextlib.suppress(AssertionError):
            wait_until(lambda: rss_kib(self.broker.pid) - rss_before < RSS_SLACK_MIB * 1024, 20,
                       "the broker's memory to return", interval=0.2)
        rss_after, fds_after = rss_kib(self.broker.pid), fd_count(self.broker.pid)
        print(f"after the soak: RSS {rss_after / 1024:.1f} MiB ({(rss_after - rss_before) / 1024:+.1f} MiB, waited "
              f"{time.monotonic() - start:.1f} s for it), {fds_after} fds ({fds_after - fds_before:+d})", flush=True)
        now = {t["id"]: t["agent"] for t in self.client.tunnels()}
        reconnected = sum(1 for i in self.healthy_ids
                          if not now[i]["connected"] or now[i]["connected_since"] != since[i])
        self.sampler.stopped.set()
        return {
            "rounds": rounds,
            "calm_mbps": self.mbps("calm"),
            "attack_mbps": self.mbps("attack"),
            "ratio": self.mbps("attack") / self.mbps("calm"),
            "ok": sum(self.healthy.done),
            "failed": len(self.healthy.failed),
            "corrupted": len(self.healthy.corrupted),
            "reconnected": reconnected,
            "peak_rss_mib": self.sampler.peak_rss_kib / 1024,
            "peak_fds": self.sampler.peak_fds,
            "rss_before_mib": rss_before / 1024,
            "rss_after_mib": rss_after / 1024,
            "growth_mib": (rss_after - rss_before) / 1024,
            "broker_cpu_calm": mean_cpu(self.phases, "calm"),
            "broker_cpu_attack": mean_cpu(self.phases, "attack"),
            "attack_cpu_s": self.attack_cpu,
        }

    def broker_log_summary(self) -> list[str]:
        """Lines of the broker's log that matter: tracebacks and errors (warnings are the attack's)."""
        lines = self.broker.log().splitlines()
        bad = [line for line in lines if "Traceback" in line or " ERROR " in line or "CRITICAL" in line]
        return [f"broker log {self.broker.log_path}: {len(lines)} lines, {len(bad)} ERROR/Traceback", *bad[:30]]


def cpu_share(phase: Phase) -> float:
    """The broker's CPU over ``phase``, in cores."""
    return (phase.cpu_end - phase.cpu_start) / (phase.end - phase.start)


def mean_cpu(phases: list[Phase], kind: str) -> float:
    chosen = [p for p in phases if p.kind == kind and p.end]
    return sum(p.cpu_end - p.cpu_start for p in chosen) / sum(p.end - p.start for p in chosen)


COLUMNS = [
    ("healthy MB/s without attack", "calm_mbps", ".0f"), ("during attack", "attack_mbps", ".0f"),
    ("ratio (goal ≥ 0.8)", "ratio", ".2f"), ("healthy downloads", "ok", ".0f"),
    ("failed (goal 0)", "failed", ".0f"), ("corrupted (goal 0)", "corrupted", ".0f"),
    ("healthy agents reconnected", "reconnected", ".0f"),
    ("broker peak RSS MiB", "peak_rss_mib", ".0f"), ("broker peak fds", "peak_fds", ".0f"),
    ("RSS before the first attack, MiB", "rss_before_mib", ".1f"), ("after the soak, MiB", "rss_after_mib", ".1f"),
    ("growth, MiB (goal < 16)", "growth_mib", "+.1f"),
]


def render(result: dict[str, float], soak: Soak) -> str:
    args = soak.args
    what = (f"one soak of {args.agents} agents downloading {DOWNLOAD // MIB} MiB each again and again (every byte "
            f"checked), {result['rounds']:.0f} rounds of {args.phase:g} s without attack then {args.phase:g} s with; "
            f"broker shipped but --resume-grace {RESUME_GRACE}.")
    counts = soak.counts
    attacks = []
    for cls, label in CLASSES.items():
        ends = sorted(((k.partition(": ")[2], v) for k, v in counts["outcomes"].items() if k.startswith(cls + ":")),
                      key=lambda kv: -kv[1])
        flood = f", {soak.flooded_mib[cls]:.0f} MiB sent" if cls in soak.flooded_mib else ""
        attacks.append(f"{label} {counts['mounted'][cls]} ({', '.join(f'{k} {v}' for k, v in ends)}{flood})")
    return "\n".join([
        run_line(what), "",
        "| " + " | ".join(header for header, _, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        "| " + " | ".join(f"{result[key]:{fmt}}" for _, key, fmt in COLUMNS) + " |", "",
        f"- Attacks mounted, and how they ended: {'; '.join(attacks)}.",
        f"- Answers other than documented: {len(soak.unexpected)}. Broker CPU: {result['broker_cpu_calm']:.2f} cores "
        f"without attack, {result['broker_cpu_attack']:.2f} during; the attack process used "
        f"{result['attack_cpu_s']:.0f} CPU s of the same cores.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--phase", type=float, default=60, help="seconds of each phase, with or without attack")
    parser.add_argument("--warm-up", type=float, default=30)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2.0,
                        help="MB/s each healthy agent asks for at most (0: as fast as it can); the default "
                             "leaves this machine headroom, as notebooks do, so that the attack is mounted")
    parser.add_argument("--ci", action="store_true", help="about 2 minutes: --minutes 2 --phase 15 --warm-up 10")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--attack", metavar="PLAN", help=argparse.SUPPRESS)  # the attack process
    args = parser.parse_args()
    if args.attack:
        attack_main(args.attack)
        return
    if args.ci:
        args.minutes, args.phase, args.warm_up = 2, 15, 10
    socket.setdefaulttimeout(STALL_TIMEOUT)  # a healthy download that stalls fails instead of hanging
    workdir = Path(tempfile.mkdtemp(prefix="bt-soak-"))
    procs = ProcessGroup(workdir)
    soak = Soak(args, workdir, procs)
    try:
        result = soak.run()
        table = render(result, soak)
        print(table)
        for line in [*soak.unexpected, *soak.notes, *soak.healthy.failed[:20], *soak.healthy.corrupted[:20]]:
            print(line)
    finally:
        if hasattr(soak, "broker"):
            print("\n".join(soak.broker_log_summary()))
        procs.stop_all()
    if args.write_docs:
        write_docs(table, "soak")


if __name__ == "__main__":
    main()
