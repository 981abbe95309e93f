"""Who may try to authenticate: the unauthenticated-connection cap and the per-address back-off.

Both protect the agent endpoint, the one port the broker opens to the network:

- at most ``max_pending`` connections may sit between their accept and a decided WebSocket
  upgrade; one more is closed at the accept, before any TLS state exists (acceptor.py: a
  slowloris crowd cannot fill memory);
- an address that fails authentication ``failure_limit`` times in a row is refused
  with 429 and Retry-After for a while, doubling from 1 s up to ``max_block``; a
  success clears it. A whole cluster behind one NAT address shares that counter, so
  the defaults stay forgiving: the agents' own back-off rides out a block.

No I/O here: the caller passes the time, so the rules are testable alone.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MAX_ADDRESSES = 4096
"""Addresses whose failures are remembered; the one failing least recently is forgotten first."""


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class Admission:
    """Admission rules of the agent endpoint.

    Args:
        max_pending: connections allowed at once between TLS and an answered upgrade.
        failure_limit: failed authentications in a row after which an address is blocked.
        max_block: the longest block, seconds.
        forget_after: seconds without a failure after which an address starts from zero.
    """

    def __init__(self, max_pending: int = 256, failure_limit: int = 10, max_block: float = 60.0,
                 forget_after: float = 600.0) -> None:
        self.max_pending = max_pending
        self.failure_limit = failure_limit
        self.max_block = max_block
        self.forget_after = forget_after
        self.pending = 0
        self.refused_pending_total = 0
        self.refused_blocked_total = 0
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    # -- the unauthenticated-connection cap

    def open(self) -> bool:
        """A connection wants to start its upgrade: False when the cap is reached."""
        if self.pending >= self.max_pending:
            self.refused_pending_total += 1
            return False
        self.pending += 1
        return True

    def done(self) -> None:
        """An admitted connection's upgrade was answered, or the connection went away."""
        self.pending -= 1

    # -- the per-address back-off

    def blocked_for(self, address: str, now: float) -> float:
        """Seconds ``address`` must still wait before it may try a credential (0: it may now)."""
        entry = self._failures.get(address)
        if entry is None or entry.blocked_until <= now:
            return 0.0
        self.refused_blocked_total += 1
        return entry.blocked_until - now

    def failed(self, address: str, now: float) -> float:
        """Record a failed authentication. Returns the block it starts, in seconds (0: none)."""
        entry = self._failures.pop(address, None)
        if entry is None or now - entry.last > self.forget_after:
            entry = _Failures()
        self._failures[address] = entry  # most recent last
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)
        entry.count += 1
        entry.last = now
        if entry.count < self.failure_limit:
            return 0.0
        block = min(self.max_block, 2.0 ** (entry.count - self.failure_limit))
        entry.blocked_until = now + block
        return block

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    @property
    def addresses_tracked(self) -> int:
        """Addresses remembered with failures (blocked or on their way)."""
        return len(self._failures)
