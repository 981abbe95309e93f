"""Error codes carried by RESET and GOAWAY frames (docs/protocol.md §6).

A WebSocket close caused by a wire error uses close code ``4000 + code``.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Why a stream was reset or a session ended."""

    NO_ERROR = 0
    """Graceful: nothing went wrong."""
    PROTOCOL_ERROR = 1
    """The peer sent something the protocol forbids."""
    INTERNAL_ERROR = 2
    """A bug on the sending side."""
    FLOW_CONTROL_ERROR = 3
    """Data beyond the granted window, or a window grown past 2**31-1."""
    FRAME_TOO_LARGE = 4
    """A frame longer than the receiver's announced maximum."""
    STREAM_CLOSED = 5
    """Data on a stream whose sending side had already ended."""
    REFUSED_STREAM = 6
    """The stream was not accepted (stream limit, port not allowed, going away)."""
    CONNECT_FAILED = 7
    """The agent could not connect to the target port on its node."""
    CANCEL = 8
    """The local endpoint of the stream went away (its TCP connection was reset)."""
    VERSION_MISMATCH = 9
    """The peers share no protocol version."""
    HEARTBEAT_TIMEOUT = 10
    """Nothing was heard from the peer within the heartbeat timeout."""
    CONNECTION_LOST = 11
    """The transport below the session ended. Local only, never sent."""
    REPLACED = 12
    """Another agent presented the same tunnel's credential and took over."""
    SHUTTING_DOWN = 13
    """The sender is stopping (broker or agent shutdown)."""
    TUNNEL_DELETED = 14
    """The tunnel was deleted at the broker."""
    CREDENTIAL_EXPIRED = 15
    """The tunnel's credential expired."""


def describe_code(code: int) -> str:
    """The symbolic name of a wire error code, for logs and messages; ``UNKNOWN_<n>`` for a code this
    version does not define (a newer peer may send one)."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"
