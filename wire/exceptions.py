"""Exceptions raised by batchtunnel.

The tree is short on purpose::

    TunnelError
    ├── ProtocolError          the peer broke the wire protocol; .code goes into GOAWAY
    │   ├── FlowControlError   the peer sent beyond a window, or granted past 2**31-1
    │   └── FrameTooLarge      a frame longer than the receiver announced
    ├── InvalidState           we misused the API (a command in the wrong state)
    ├── ConnectionClosed       the tunnel session ended; .code and .reason say why
    ├── AuthenticationError    a credential was missing, wrong or expired
    └── ConfigurationError     an option has an invalid value; the message names it

``ProtocolError`` is never raised out of :meth:`Connection.receive_data`: a bad peer
is recorded and answered with GOAWAY, it does not crash the caller (docs/protocol.md §7).
``InvalidState`` is also a ``ValueError`` so that misuse reads like misuse.
"""

from __future__ import annotations

from .codes import ErrorCode


class TunnelError(Exception):
    """Root of every batchtunnel exception."""


class ProtocolError(TunnelError):
    """The peer violated the wire protocol.

    Attributes:
        code: the error code sent to the peer in GOAWAY.
    """

    code: ErrorCode = ErrorCode.PROTOCOL_ERROR

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class FlowControlError(ProtocolError):
    """The peer sent more than its window allowed, or overflowed a window."""

    code = ErrorCode.FLOW_CONTROL_ERROR


class FrameTooLarge(ProtocolError):
    """The peer sent a frame longer than the maximum we announced."""

    code = ErrorCode.FRAME_TOO_LARGE


class InvalidState(TunnelError, ValueError):
    """A command was called when the connection or stream cannot accept it."""


class ConnectionClosed(TunnelError):
    """The tunnel session is over.

    Attributes:
        code: why, as a wire error code.
        reason: a human-readable explanation.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} ({describe_code(code)})")
        self.code = code
        self.reason = reason


class AuthenticationError(TunnelError):
    """A credential was missing, wrong, expired or for another tunnel."""


class ConfigurationError(TunnelError, ValueError):
    """An option has an invalid value. The message names the option and the fix."""


def describe_code(code: int) -> str:
    """Return the symbolic name of a wire error code, tolerating unknown ones."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"
