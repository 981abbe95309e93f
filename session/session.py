"""TunnelSession: a wire Connection running over a WebSocketLink (docs/protocol.md §8).

Driven by callbacks: the link calls ``message_received`` with each WebSocket
message; events are handled at once, and the output they cause (acknowledgements,
answers) is written when the callback ends, in one piece. Local data a bridge
hands over is written at once. Other output (a timer's PING, a stream opened from a
task) is written at the end of the loop iteration (``_kick`` coalesces), and
whatever waits is written when the link becomes writable again.

With resumption (``resume_grace`` > 0 and the wire feature "resume"), a lost link
suspends the session instead of ending it: streams and their local sockets stay,
and ``attach`` puts the session on a new link within the grace period (§9).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..wire import Connection, ConnectionClosed, ErrorCode, InvalidState, State, describe_code, events
from .bridge import Pause, StreamBridge
from .heartbeat import Heartbeat
from .tasks import TaskOwner
from .websocket import WebSocketLink

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024 * 1024
"""Largest WebSocket message we send; output is cut at any byte (frames may span messages)."""

OUTPUT_HIGH = 1024 * 1024
"""Queued output above which local sockets stop being read until the link takes the queue.

Windows bound what the *peer* must buffer; this bounds what *we* buffer when the
WebSocket drains slower than local sockets fill it."""

Acceptor = Callable[["TunnelSession", StreamBridge], Coroutine[Any, Any, None]]
"""Serves a stream the peer opened: ``accept(session, bridge)`` connects ``bridge.port`` or resets it.

The bridge is registered before the acceptor runs, so data that arrives while
it connects is kept (bounded by the stream's window, as it is not acknowledged)."""


class TunnelSession:
    """One tunnel session over one WebSocket, until the link is lost.

    Args:
        conn: a fresh wire Connection (its HELLO is still queued).
        link: the WebSocket; the session becomes its receiver.
        name: used in log lines and task names (never a secret).
        accept: serves streams the peer opens; None refuses them.
        on_started: called once the HELLO exchange completed.
        heartbeat_interval: seconds between PINGs.
        heartbeat_timeout: seconds of silence from the peer after which the link is declared dead.
        resume_grace: seconds a session whose link was lost waits for ``attach`` before its streams
            are reset; 0 ends it with the link.
        session_id: the session's name for resumption (the broker draws it; the agent learns it).
    """

    def __init__(
        self,
        conn: Connection,
        link: WebSocketLink,
        *,
        name: str,
        accept: Acceptor | None = None,
        on_started: Callable[[], None] | None = None,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 15.0,
        resume_grace: float = 0.0,
        session_id: str | None = None,
    ) -> None:
        self.conn = conn
        self.link = link
        link.receiver = self
        self.name = name
        self.session_id = session_id or secrets.token_hex(16)
        self._grace = resume_grace
        self._grace_timer: asyncio.TimerHandle | None = None
        self.suspended_since: float | None = None  # wall clock, while the link is down and streams wait
        self.resumes = 0
        self._accept = accept
        self._on_started = on_started
        self.heartbeat = Heartbeat(heartbeat_interval, heartbeat_timeout, self._ping, self._link_silent)
        self._bridges: dict[int, StreamBridge] = {}
        self._congested: dict[StreamBridge, None] = {}  # paused for OUTPUT, in order
        self._tasks = TaskOwner(f"session {name}")
        self._loop = asyncio.get_running_loop()
        self._started: asyncio.Future[None] = self._loop.create_future()
        # One-shot signals as futures, not Events: an Event allocates a waiter deque (~2 KiB per
        # idle agent on the broker, measured with tracemalloc).
        self._over: asyncio.Future[None] = self._loop.create_future()  # the session ends
        self._link_down: asyncio.Future[None] = self._loop.create_future()  # the current link is lost
        self._finished: asyncio.Future[None] = self._loop.create_future()
        self._flush_scheduled = False
        self._batch = False  # a link callback is being handled: it writes the output when it ends
        self._close_sent = False
        self._reading_paused = False  # the link is not read: our answers to the peer wait (input_paused)
        self.closed: ConnectionClosed | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.streams_accepted = 0  # opened by the peer

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> ConnectionClosed:
        """Serve until the session ends: its link is lost (and, with resumption, no new one is attached
        within the grace period), or it is closed. Never raises for a peer's misbehaviour."""
        self.heartbeat.start()
        self._flush()  # our HELLO
        try:
            await self._over
        finally:
            self.heartbeat.stop()
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            if not self._link_down.done():
                self._link_down.set_result(None)
            if self.closed is None:
                self.conn.receive_eof()
                self._process()
            self.link.abort()
            await self._tasks.aclose()
            for bridge in list(self._bridges.values()):
                bridge.abort()
            self._bridges.clear()
            if not self._started.done():
                self._started.cancel()
            self._finished.set_result(None)
        assert self.closed is not None
        return self.closed

    async def wait_started(self, timeout: float) -> None:
        """Wait until the HELLO exchange completed.

        Raises:
            asyncio.TimeoutError: not within ``timeout`` seconds.
            asyncio.CancelledError: the session ended first.
        """
        await asyncio.wait_for(asyncio.shield(self._started), timeout)

    @property
    def started(self) -> bool:
        return self._started.done() and not self._started.cancelled()

    async def wait_finished(self) -> None:
        await asyncio.shield(self._finished)

    async def wait_link_down(self) -> None:
        """Wait until the current link is lost (the session is then suspended or over)."""
        await asyncio.shield(self._link_down)

    @property
    def rtt(self) -> float | None:
        """The last heartbeat's round trip, seconds."""
        return self.heartbeat.rtt

    @property
    def carries_streams(self) -> bool:
        """A new stream may be opened now: the HELLOs were exchanged and the session is not over. While
        suspended it may: the stream waits for the next link (resumption)."""
        return self.started and self.closed is None

    @property
    def suspended(self) -> bool:
        """The link is lost; streams wait for ``attach`` (resumption)."""
        return self.suspended_since is not None and self.closed is None

    @property
    def resumable(self) -> bool:
        """A new link could take this session over."""
        return self._grace > 0 and self.conn.resumable and not self._over.done()

    def attach(self, link: WebSocketLink) -> None:
        """Carry on over ``link``, replacing the current one (lost, or presumed so: the peer's new
        connection says it is). Our RESUME goes first; the peer's brings both sides in step.

        The resume counts from here, when the new link is taken, not once the RESUME exchange ends: the
        tunnel's state (connected since, resumes) changes in one step, never half (a test reading it
        between the two saw a new connection and no resume)."""
        self.resumes += 1
        old = self.link
        if old is not link:
            old.receiver = None
            old.abort()
        if self.conn.state is not State.SUSPENDED:
            self.conn.suspend()
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        self.link = link
        link.receiver = self
        self._close_sent = False
        self._reading_paused = False
        if self._link_down.done():
            self._link_down = self._loop.create_future()
        self.conn.resume()
        self.heartbeat.start()
        self._kick()  # the link may still be answering the upgrade: write once the callback is done

    def close(self, code: int = ErrorCode.SHUTTING_DOWN, reason: str = "closing") -> None:
        """End the session: GOAWAY with ``code``, reset every stream, then close the WebSocket."""
        self.conn.go_away(code, reason)
        self._process()
        self._flush()

    # --------------------------------------------------- the link's receiver

    def message_received(self, data: bytes) -> None:
        self.heartbeat.heard()
        self.bytes_in += len(data)
        self._batch = True
        try:
            self.conn.receive_data(data)
            self._process()
        finally:
            self._batch = False
        if self.conn.input_paused and not self._reading_paused:
            # The peer asks for answers faster than they leave (docs/protocol.md 7.1): read no more
            # until the link takes them. Before the flush below, which takes them: the wire holds the
            # rest of this message unparsed, and reading on would add every next message to it.
            self._reading_paused = True
            self.link.pause_reading()
        self._flush()  # the acknowledgements and answers this message caused, together

    def writing_resumed(self) -> None:
        self._flush()

    def link_lost(self) -> None:
        self.heartbeat.stop()
        # A peer that leaves on purpose says so with GOAWAY (the session is closed by then). A bare
        # WebSocket close is treated as a lost transport: proxies that kill WebSockets send one too.
        if self.closed is None and self._grace > 0 and not self._over.done() and self.conn.suspend():
            self.suspended_since = time.time()
            self._grace_timer = self._loop.call_later(self._grace, self._grace_expired)
            log.info("session %s: link lost; its %d streams wait up to %.0f s for a new link",
                     self.name, self.stream_count, self._grace)
        elif not self._over.done():
            self._over.set_result(None)
        if not self._link_down.done():
            self._link_down.set_result(None)

    def _grace_expired(self) -> None:
        self._grace_timer = None
        log.warning("session %s: no new link within %.0f s; its %d streams are reset",
                    self.name, self._grace, self.stream_count)
        self.conn.receive_eof()
        self._process()

    # ------------------------------------------------------ stream commands

    def open_stream_for(self, bridge: StreamBridge, port: int) -> int | None:
        """Open a stream towards ``port`` for a local connection; None if impossible now."""
        try:
            sid = self.conn.open_stream(port)
        except InvalidState as exc:
            log.warning("session %s: cannot open a stream to port %d: %s", self.name, port, exc)
            return None
        self._bridges[sid] = bridge
        self._kick()
        return sid

    def send(self, bridge: StreamBridge, data: bytes) -> Pause:
        """Send local data on ``bridge``'s stream; returns why the bridge must stop reading, if it must:
        its window is spent (until StreamDrained), or our output is backed up (until the link takes it)."""
        assert bridge.stream_id is not None
        self.bytes_out += len(data)
        pause = Pause.NONE
        if not self.conn.send_data(bridge.stream_id, data):
            pause |= Pause.WINDOW
        if not self._batch:
            self._flush()  # now, not at the end of the loop iteration: one less wake-up per round trip
        if self.conn.bytes_to_send > OUTPUT_HIGH:  # the link did not take it all
            pause |= Pause.OUTPUT
            self._congested[bridge] = None
        return pause

    def end_stream(self, stream_id: int) -> None:
        self.conn.end_stream(stream_id)
        self._kick()

    def reset(self, stream_id: int, code: int) -> None:
        self.conn.reset_stream(stream_id, code)
        self._bridges.pop(stream_id, None)
        self._kick()

    def acknowledge(self, stream_id: int, length: int) -> None:
        self.conn.acknowledge_received(stream_id, length)
        self._kick()

    def forget(self, bridge: StreamBridge) -> None:
        if bridge.stream_id is not None and self._bridges.get(bridge.stream_id) is bridge:
            del self._bridges[bridge.stream_id]

    @property
    def stream_count(self) -> int:
        return len(self.conn.stream_ids())

    # --------------------------------------------------------------- output

    def _kick(self) -> None:
        """Write pending output once the current loop iteration's callbacks are done (coalescing), or
        when the link callback being handled ends."""
        if not self._flush_scheduled and not self._batch:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.link.writable or self.closed is not None:
            data = self.conn.data_to_send()
            if data:
                if self._congested:  # the queue is taken: let the paused sockets refill it
                    congested, self._congested = self._congested, {}
                    for bridge in congested:
                        bridge.unpause(Pause.OUTPUT)
                if len(data) <= MAX_MESSAGE:
                    self.link.write(data)
                else:
                    with memoryview(data) as view:  # slices of a view: no copies
                        for start in range(0, len(data), MAX_MESSAGE):
                            self.link.write(view[start:start + MAX_MESSAGE])
            if self._reading_paused and self.closed is None:
                self.conn.receive_data(b"")  # what was held while our answers waited
                self._process()
                if not self.conn.input_paused:
                    self._reading_paused = False
                    self.link.resume_reading()
        if self.closed is not None and not self._close_sent:
            self._close_sent = True
            self.link.close(_close_code(self.closed.code), self.closed.reason[:120])

    def _ping(self, payload: bytes) -> None:
        self.conn.ping(payload)
        self._kick()

    def _link_silent(self, silent: float) -> None:
        log.warning("session %s: nothing heard for %.1f s (timeout %.1f s); dropping the link",
                    self.name, silent, self.heartbeat.timeout)
        if not self.resumable:  # else the session waits for a new link: say nothing on this one
            self.conn.go_away(ErrorCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
            self._process()
        self.link.abort()

    # --------------------------------------------------------------- events

    def _process(self) -> None:
        # isinstance, not match: the agent's modules run on Python 3.9 too (batchtunnel-agent.pyz).
        for event in self.conn.events_received():
            if isinstance(event, events.DataReceived):
                if (bridge := self._bridges.get(event.stream_id)) is not None:
                    bridge.deliver(event.data)
            elif isinstance(event, events.StreamDrained):
                if (bridge := self._bridges.get(event.stream_id)) is not None:
                    bridge.unpause(Pause.WINDOW)
            elif isinstance(event, events.StreamEnded):
                if (bridge := self._bridges.get(event.stream_id)) is not None:
                    bridge.peer_ended()
            elif isinstance(event, events.StreamReset):
                if (bridge := self._bridges.pop(event.stream_id, None)) is not None:
                    bridge.abort()
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("session %s: stream %d reset (%s)", self.name, event.stream_id,
                              describe_code(event.code))
            elif isinstance(event, events.StreamOpened):
                self._on_stream_opened(event.stream_id, event.port)
            elif isinstance(event, events.PingAcknowledged):
                self.heartbeat.acknowledged(event.payload)
            elif isinstance(event, events.SessionStarted):
                if not self._started.done():
                    self._started.set_result(None)
                    if self._on_started is not None:
                        self._on_started()
            elif isinstance(event, events.GoAwayReceived):
                log.info("session %s: peer is going away: %s (%s)", self.name, event.reason or "-",
                         describe_code(event.code))
            elif isinstance(event, events.SessionResumed):
                self._on_resumed(event)
            elif isinstance(event, events.ConnectionTerminated):
                self.closed = ConnectionClosed(event.code, event.reason)
                if event.local and self.conn.error is not None:
                    log.warning("session %s: peer broke the protocol: %s", self.name, event.reason)
                if self._link_down.done() and not self._over.done():
                    self._over.set_result(None)  # no link to close
        self._kick()

    def _on_resumed(self, event: events.SessionResumed) -> None:
        down = time.time() - self.suspended_since if self.suspended_since is not None else 0.0
        self.suspended_since = None
        log.info("session %s: resumed after %.1f s: %d streams carried on, %d bytes sent again, "
                 "%d reset (the peer had lost them)", self.name, down, event.streams, event.replayed, event.lost)

    def _on_stream_opened(self, stream_id: int, port: int) -> None:
        if self._accept is None:
            self.conn.reset_stream(stream_id, ErrorCode.REFUSED_STREAM)
            return
        self.streams_accepted += 1
        bridge = StreamBridge(self, stream_id, port)
        self._bridges[stream_id] = bridge
        self._tasks.spawn(self._accept(self, bridge), f"accept {stream_id}")


def _close_code(code: int) -> int:
    """WebSocket close code for a wire error code (docs/protocol.md §6)."""
    return 4000 + code if 0 < code < 1000 else 1000
