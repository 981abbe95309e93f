"""Events that :meth:`Connection.events_received` returns (docs/protocol.md §5).

Each is a frozen dataclass named in the past tense: it reports something that
happened; the caller decides what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType, Union

from .hello import Negotiated

StreamId = NewType("StreamId", int)


@dataclass(frozen=True)
class SessionStarted:
    """The peer's HELLO arrived and negotiation succeeded. Streams may now be opened."""

    negotiated: Negotiated


@dataclass(frozen=True)
class SessionResumed:
    """The peer's RESUME arrived on a new transport (§9): the session goes on.

    ``streams`` live on; ``replayed`` bytes were sent again; ``lost`` streams were reset because
    the peer no longer had them."""

    streams: int
    replayed: int
    lost: int


@dataclass(frozen=True)
class StreamEvent:
    """Something that happened on one stream (the events below, to ``StreamDrained``)."""

    stream_id: StreamId


@dataclass(frozen=True)
class StreamOpened(StreamEvent):
    """The peer opened a stream towards ``port``. Connect it, or reset it."""

    port: int


@dataclass(frozen=True)
class DataReceived(StreamEvent):
    """Stream data. Call ``acknowledge_received(stream_id, len(data))`` once it is delivered."""

    data: bytes


@dataclass(frozen=True)
class StreamEnded(StreamEvent):
    """The peer will send no more data on this stream (half-close). We may still send."""


@dataclass(frozen=True)
class StreamReset(StreamEvent):
    """The stream is gone: reset by the peer, refused, or lost with the session."""

    code: int


@dataclass(frozen=True)
class StreamDrained(StreamEvent):
    """Data queued by ``send_data`` (which had returned False) has all been sent.

    Resume reading the stream's source.
    """


@dataclass(frozen=True)
class PingAcknowledged:
    """The peer answered one of our PINGs."""

    payload: bytes


@dataclass(frozen=True)
class GoAwayReceived:
    """The peer will accept no stream above ``last_stream_id``; ours above it were reset."""

    last_stream_id: int
    code: int
    reason: str


@dataclass(frozen=True)
class ConnectionTerminated:
    """The session is over. Send what ``data_to_send`` still returns, then close the transport.

    ``local`` is True when we ended it (the peer broke the protocol, or the
    transport was lost), False when the peer's GOAWAY carried an error.
    """

    code: int
    reason: str
    local: bool


Event = Union[
    SessionStarted,
    SessionResumed,
    StreamOpened,
    DataReceived,
    StreamEnded,
    StreamReset,
    StreamDrained,
    PingAcknowledged,
    GoAwayReceived,
    ConnectionTerminated,
]
