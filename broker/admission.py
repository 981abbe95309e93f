"""Who may try to authenticate: the unauthenticated-connection cap and the per-address back-off.

Both protect the agent endpoint, the one port the broker opens to the network:

- at most ``max_pending`` connections may sit between their accept and a decided WebSocket
  upgrade; one more is closed at the accept, before any TLS state exists (acceptor.py: a
  slowloris crowd cannot fill memory). One address may hold at most half of them, so that a
  crowd from one address cannot keep every other agent out;
- an address that fails authentication ``failure_limit`` times within ``window`` seconds is
  refused with 429 and Retry-After for a while, doubling from 1 s up to ``max_block`` with
  each further failure. A success does not clear the count: one valid token interleaved
  between guesses would reset it otherwise. A whole cluster behind one NAT address shares the
  count, so the defaults stay forgiving: an agent whose token is refused retries no faster
  than every ``--backoff-max`` (30 s), two failures a minute.

No I/O here: the caller passes the time, so the rules are testable alone.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

MAX_ADDRESSES = 4096
"""Addresses whose failures are remembered; the one failing least recently is forgotten first."""


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)  # of the failures within the window, oldest first
    blocked_until: float = 0.0


class Admission:
    """Admission rules of the agent endpoint.

    Args:
        max_pending: connections allowed at once between their accept and an answered upgrade; one
            address may hold half of them (at least one).
        failure_limit: failed authentications within ``window`` after which an address is blocked.
        max_block: the longest block, seconds.
        window: seconds a failure counts.
        unshared: addresses that may take the whole cap (trusted reverse proxies: every agent comes
            through them).
    """

    def __init__(self, max_pending: int = 256, failure_limit: int = 10, max_block: float = 60.0,
                 window: float = 60.0, unshared: frozenset[str] = frozenset()) -> None:
        self.max_pending = max_pending
        self.failure_limit = failure_limit
        self.max_block = max_block
        self.window = window
        self.pending = 0
        self.share = max(1, max_pending // 2)
        self.unshared = unshared  # addresses held to no share: trusted reverse proxies, the agents' relay
        self.admitted_total = 0
        self.refused_pending_total = 0
        self.refused_share_total = 0
        self.refused_blocked_total = 0
        self._pending_by_address: dict[str, int] = {}  # at most max_pending entries
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    # -- the unauthenticated-connection cap

    def open(self, address: str) -> bool:
        """A connection from ``address`` wants to start its upgrade: False when the cap is reached, or
        when that address already holds its share of it."""
        if self.pending >= self.max_pending:
            self.refused_pending_total += 1
            return False
        held = self._pending_by_address.get(address, 0)
        if held >= self.share and address not in self.unshared:
            self.refused_share_total += 1
            return False
        self._pending_by_address[address] = held + 1
        self.pending += 1
        self.admitted_total += 1
        return True

    def done(self, address: str) -> None:
        """An admitted connection's upgrade was answered, or the connection went away."""
        self.pending -= 1
        held = self._pending_by_address[address] - 1
        if held:
            self._pending_by_address[address] = held
        else:
            del self._pending_by_address[address]

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
        entry = self._failures.pop(address, None) or _Failures()
        self._failures[address] = entry  # most recent last
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)
        times = entry.times
        while times and now - times[0] > self.window:
            times.popleft()
        times.append(now)
        excess = len(times) - self.failure_limit
        if excess < 0:
            return 0.0
        if excess > 16:  # the block is at its longest long before: keep the record small
            times.popleft()
        block = min(self.max_block, 2.0 ** min(excess, 16))
        entry.blocked_until = now + block
        return block

    @property
    def addresses_tracked(self) -> int:
        """Addresses remembered with failures (blocked or on their way)."""
        return len(self._failures)
