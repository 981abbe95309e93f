"""The heartbeat of a tunnel session: a PING every interval, the link declared dead after a silence.

A timer, not a task: an idle session on the broker should cost little (a task with its coroutine
is about ten times a timer handle). Anything the peer sends counts as a sign of life, not only the
answers to our PINGs, so a busy link is never declared dead for a PING stuck behind its data.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable


class Heartbeat:
    """Calls ``ping(payload)`` every ``interval`` seconds, and ``silent(seconds)`` instead, once, when
    nothing was heard for more than ``timeout`` seconds; then it stops until :meth:`start`.

    The session reports what it hears with :meth:`heard` and the answers to its PINGs with
    :meth:`acknowledged`, which measures the round trip (``rtt``, seconds).
    """

    __slots__ = ("_loop", "interval", "timeout", "_ping", "_silent", "_timer", "_last_heard", "_ids",
                 "_outstanding", "rtt")

    def __init__(self, interval: float, timeout: float, ping: Callable[[bytes], None],
                 silent: Callable[[float], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self.interval = interval
        self.timeout = timeout
        self._ping = ping
        self._silent = silent
        self._timer: asyncio.TimerHandle | None = None
        self._last_heard = self._loop.time()
        self._ids = itertools.count()
        self._outstanding: tuple[bytes, float] | None = None  # our PING not yet answered: payload, time sent
        self.rtt: float | None = None

    def start(self) -> None:
        """Start (or start again, on a new link: the silence counts from now)."""
        self.stop()
        self._last_heard = self._loop.time()
        self._outstanding = None
        self._timer = self._loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def heard(self) -> None:
        """The peer sent something."""
        self._last_heard = self._loop.time()

    def acknowledged(self, payload: bytes) -> None:
        """The peer answered a PING with ``payload``."""
        if self._outstanding is not None and self._outstanding[0] == payload:
            self.rtt = self._loop.time() - self._outstanding[1]
            self._outstanding = None

    def _tick(self) -> None:
        silent = self._loop.time() - self._last_heard
        if silent > self.timeout:
            self._timer = None
            self._silent(silent)
            return
        payload = next(self._ids).to_bytes(8, "big")
        self._outstanding = (payload, self._loop.time())
        self._timer = self._loop.call_later(self.interval, self._tick)
        self._ping(payload)
