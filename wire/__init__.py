"""The batchtunnel wire protocol, sans I/O (specified in docs/protocol.md).

Standard library only: no asyncio, sockets, clocks or randomness. Feed bytes
to a :class:`Connection`, read events, send what it gives back.
"""

from .codes import ErrorCode
from .connection import Connection, Side, State
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
    StreamId,
    StreamOpened,
    StreamReset,
)
from .exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConnectionClosed,
    FlowControlError,
    FrameTooLarge,
    InvalidState,
    ProtocolError,
    TunnelError,
)
from .hello import Negotiated, Settings

__all__ = [
    "AuthenticationError", "ConfigurationError", "Connection", "ConnectionClosed",
    "ConnectionTerminated", "DataReceived", "ErrorCode", "Event", "FlowControlError",
    "FrameTooLarge", "GoAwayReceived", "InvalidState", "Negotiated", "PingAcknowledged",
    "ProtocolError", "SessionResumed", "SessionStarted", "Settings", "Side", "State", "StreamDrained",
    "StreamEnded", "StreamId", "StreamOpened", "StreamReset", "TunnelError",
]
