"""The states of a connection, and what each one receives and sends (docs/protocol.md §4, §7, §9).

Every rule about *when* a frame may travel is in the two tables below (h11 keeps its state machine
the same way): a frame the peer sends that its row does not accept is a protocol error, and a frame
we would send that its row does not allow is not queued (there is no transport to take it, or the
RESUME record must go first)::

    state       receives                             sends
    HANDSHAKE   HELLO                                anything (our HELLO is queued first)
    OPEN        every frame but HELLO and RESUME     anything
    SUSPENDED   nothing: input is ignored            nothing: the transport is gone (§9)
    RESUMING    RESUME, PING, GOAWAY                 RESUME, PING, GOAWAY
    CLOSED      nothing: input is ignored            nothing
"""

from __future__ import annotations

import enum

from .exceptions import ProtocolError
from .frames import FrameType


class State(enum.Enum):
    HANDSHAKE = "handshake"
    """Our HELLO is queued; the peer's has not arrived."""
    OPEN = "open"
    """Streams flow."""
    SUSPENDED = "suspended"
    """Resume: the transport is gone. Streams live on; what they send waits."""
    RESUMING = "resuming"
    """Resume: our RESUME is queued on a new transport; the peer's has not arrived."""
    CLOSED = "closed"
    """The session is over."""


LIVE = frozenset({State.OPEN, State.SUSPENDED, State.RESUMING})
"""States in which streams may be used (while not OPEN, their output waits)."""

_EVERY = frozenset(FrameType)
_RESUMING = frozenset({FrameType.RESUME, FrameType.PING, FrameType.GOAWAY})

RECEIVES: dict[State, frozenset[FrameType]] = {
    State.HANDSHAKE: frozenset({FrameType.HELLO}),
    State.OPEN: _EVERY - {FrameType.HELLO, FrameType.RESUME},
    State.SUSPENDED: frozenset(),
    State.RESUMING: _RESUMING,
    State.CLOSED: frozenset(),
}
"""Frames the peer may send in each state."""

SENDS: dict[State, frozenset[FrameType]] = {
    State.HANDSHAKE: _EVERY,
    State.OPEN: _EVERY,
    State.SUSPENDED: frozenset(),
    State.RESUMING: _RESUMING,
    State.CLOSED: frozenset(),
}
"""Frames we may queue in each state; others are dropped (the RESUME exchange recovers what matters)."""

PARSES = frozenset({State.HANDSHAKE, State.OPEN, State.RESUMING})
"""States in which input is parsed at all."""


def check_received(state: State, type_: FrameType) -> None:
    """Raise ProtocolError if the peer may not send ``type_`` in ``state``, saying why."""
    if type_ in RECEIVES[state]:
        return
    if state is State.HANDSHAKE:
        raise ProtocolError(f"{type_.name} before HELLO")
    if state is State.RESUMING:
        raise ProtocolError(f"{type_.name} before the RESUME record ended")
    if type_ is FrameType.HELLO:
        raise ProtocolError("second HELLO")
    raise ProtocolError(f"{type_.name} outside a resumption")
