"""Every exception batchtunnel raises, as one tree (this docstring is the only drawing of it).

::

    TunnelError                    root of them all
    ├── ProtocolError              the peer broke the wire protocol; .code goes into GOAWAY
    │   ├── FlowControlError       the peer sent beyond a window, or granted past MAX_WINDOW
    │   └── FrameTooLarge          a frame longer than the receiver announced
    ├── FramingError               the peer broke WebSocket framing (RFC 6455); .code is the close
    │                              code to answer with (session/wsframes.py raises it)
    ├── HandshakeFailed            the agent's WebSocket to the broker did not open
    │   ├── HandshakeRejected      the broker answered the upgrade with .status, not 101;
    │   │                          .retry_after is its Retry-After header, if any
    │   ├── PeerRejected           the broker's certificate failed the pin: nothing was sent
    │   └── ProxyRefused           the HTTP proxy did not open a tunnel to the broker; .status is
    │                              its answer (407: credentials), 0 when it did not answer HTTP
    ├── ConnectionClosed           a tunnel session ended; .code and .reason say why
    │                              (what TunnelSession.run returns)
    ├── AuthenticationError        a credential was missing, wrong or expired
    ├── ApiError                   the broker's admin API refused a request with HTTP .status,
    │                              or could not be reached (.status 0)
    ├── ConnectToJobError          the connect-to-job command could not start, or ended
    │                              (also a RuntimeError, as batchspawner's own start errors)
    ├── JobEndedError              a batch job ended before its notebook started; the message
    │                              has the batch system's reason (also a RuntimeError)
    ├── InvalidState               we misused an API: a command in the wrong state (also a ValueError)
    └── ConfigurationError         an option has an invalid value; the message names it and the fix
        │                          (also a ValueError)
        └── OptionsError           a user's spawn options were refused, every bad field named

A peer's mistakes never escape as exceptions from the sans-I/O parsers: ``Connection.receive_data``
records a ProtocolError and answers it with GOAWAY (docs/protocol.md §7), and the WebSocket link
answers a FramingError with a close frame. What reaches a caller is a ConnectionClosed, or one of
the errors of a request it made (HandshakeFailed, ApiError, ConnectToJobError, JobEndedError).
"""

from __future__ import annotations

from .codes import ErrorCode, describe_code


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


class FramingError(TunnelError):
    """The peer broke RFC 6455's framing rules.

    Attributes:
        code: the WebSocket close code to answer with (1002, 1003 or 1009).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class HandshakeFailed(TunnelError):
    """The agent's WebSocket to the broker did not open."""


class HandshakeRejected(HandshakeFailed):
    """The broker answered the upgrade with another status than 101.

    Attributes:
        status: the HTTP status (401 wrong credential, 429 blocked, ...).
        retry_after: the answer's Retry-After header in seconds, if it had one.
    """

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class PeerRejected(HandshakeFailed):
    """The agent refused the broker after the TLS handshake (a certificate pin did not match):
    nothing, the credential least of all, was sent."""


class ProxyRefused(HandshakeFailed):
    """The HTTP proxy on the way to the broker answered CONNECT with anything but 2xx.

    Attributes:
        status: the proxy's HTTP status (407: authentication, 403: not allowed), 0 if not HTTP.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConnectionClosed(TunnelError):
    """A tunnel session is over.

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


class ApiError(TunnelError):
    """The broker's admin API refused a request, or could not be reached.

    The broker raises it to answer a request (its message becomes the answer's ``error``); the
    client raises it from such an answer.

    Attributes:
        status: the HTTP status; 0 when the broker could not be reached.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConnectToJobError(TunnelError, RuntimeError):
    """The connect-to-job command could not be rendered or started, or ended before it was ready."""


class JobEndedError(TunnelError, RuntimeError):
    """A batch job ended before its notebook started. The message says why, as the batch system tells
    it (state, reason, exit code, the end of the job's output), for the user's spawn page."""


class InvalidState(TunnelError, ValueError):
    """A command was called when the connection or stream cannot accept it."""


class ConfigurationError(TunnelError, ValueError):
    """An option has an invalid value. The message names the option and the fix."""


class OptionsError(ConfigurationError):
    """A user's spawn options (form or REST ``user_options``) were refused; the message names every
    bad field, e.g. "cores: 64 is more than the 16 allowed"."""
