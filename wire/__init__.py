"""The batchtunnel wire protocol, sans I/O (specified in docs/protocol.md).

Standard library only: no asyncio, sockets, clocks or randomness. Feed bytes
to a :class:`Connection`, read events, send what it gives back.

This package is the base every other one imports, so it also holds the project's one exception
tree (``exceptions.py``).

The names below are imported on first use (PEP 562), not with the package: ``from ..wire import
ConfigurationError`` loads two small modules, not the whole protocol. That keeps ``batchtunnel
agent -- COMMAND`` from paying for the protocol's imports before it starts the job's notebook
(docs/benchmarks.md, "Time to a usable notebook").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

_HOME: dict[str, str] = {
    "ErrorCode": "codes", "describe_code": "codes",
    "Connection": "connection", "Side": "connection",
    "ConnectionTerminated": "events", "DataReceived": "events", "Event": "events", "GoAwayReceived": "events",
    "PingAcknowledged": "events", "SessionResumed": "events", "SessionStarted": "events",
    "StreamDrained": "events", "StreamEnded": "events", "StreamEvent": "events", "StreamId": "events",
    "StreamOpened": "events", "StreamReset": "events",
    "ApiError": "exceptions", "AuthenticationError": "exceptions", "ConfigurationError": "exceptions",
    "ConnectionClosed": "exceptions", "ConnectToJobError": "exceptions", "FlowControlError": "exceptions",
    "FrameTooLarge": "exceptions", "FramingError": "exceptions", "HandshakeFailed": "exceptions",
    "HandshakeRejected": "exceptions", "InvalidState": "exceptions", "JobEndedError": "exceptions",
    "OptionsError": "exceptions", "PeerRejected": "exceptions", "ProtocolError": "exceptions",
    "ProxyRefused": "exceptions", "TunnelError": "exceptions",
    "SERVICE_HUB_API": "frames",
    "Negotiated": "hello", "Settings": "hello",
    "State": "states",
}
"""Each public name -> the module of this package that defines it."""

__all__ = [  # a list mypy reads; tests/wire checks it names exactly _HOME's keys
    "ApiError", "AuthenticationError", "ConfigurationError", "ConnectToJobError", "Connection",
    "ConnectionClosed", "ConnectionTerminated", "DataReceived", "ErrorCode", "Event", "FlowControlError",
    "FrameTooLarge", "FramingError", "GoAwayReceived", "HandshakeFailed", "HandshakeRejected", "InvalidState",
    "JobEndedError", "Negotiated", "OptionsError", "PeerRejected", "PingAcknowledged", "ProtocolError",
    "ProxyRefused", "SERVICE_HUB_API", "SessionResumed", "SessionStarted", "Settings", "Side", "State",
    "StreamDrained", "StreamEnded", "StreamEvent", "StreamId", "StreamOpened", "StreamReset", "TunnelError",
    "describe_code",
]


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
