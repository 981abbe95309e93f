"""The batchtunnel wire protocol, sans I/O (specified in docs/protocol.md).

Standard library only: no asyncio, sockets, clocks or randomness. Feed bytes
to a :class:`Connection`, read events, send what it gives back.

This package is the base every other one imports, so it also holds the project's one exception
tree (``exceptions.py``).
"""

from .codes import ErrorCode, describe_code
from .connection import Connection, Side
from .events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    PingAcknowledged,
    SessionResumed,
    SessionStarted,
    StreamDrained,
    StreamEnded,
    StreamEvent,
    StreamId,
    StreamOpened,
    StreamReset,
)
from .exceptions import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    ConnectionClosed,
    ConnectToJobError,
    FlowControlError,
    FrameTooLarge,
    FramingError,
    HandshakeFailed,
    HandshakeRejected,
    InvalidState,
    JobEndedError,
    OptionsError,
    PeerRejected,
    ProtocolError,
    ProxyRefused,
    TunnelError,
)
from .frames import SERVICE_HUB_API
from .hello import Negotiated, Settings
from .states import State

__all__ = [
    "ApiError", "AuthenticationError", "ConfigurationError", "ConnectToJobError", "Connection",
    "ConnectionClosed", "ConnectionTerminated", "DataReceived", "ErrorCode", "Event", "FlowControlError",
    "FrameTooLarge", "FramingError", "GoAwayReceived", "HandshakeFailed", "HandshakeRejected", "InvalidState",
    "JobEndedError", "Negotiated", "OptionsError", "PeerRejected", "PingAcknowledged", "ProtocolError",
    "ProxyRefused", "SERVICE_HUB_API", "SessionResumed", "SessionStarted", "Settings", "Side", "State",
    "StreamDrained", "StreamEnded", "StreamEvent", "StreamId", "StreamOpened", "StreamReset", "TunnelError",
    "describe_code",
]
