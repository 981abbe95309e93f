"""Session start: version and feature negotiation (docs/protocol.md §4).

Each side sends one HELLO as its first frame, without waiting for the other's.
Its payload is a UTF-8 JSON object, for example::

    {"versions": [1], "features": ["resume"], "initial_window": 262144,
     "max_window": 16777216, "max_frame": 262144, "max_streams": 1024,
     "software": "batchtunnel/0.1.0"}

The session uses the highest version both list, and the features both list.
Window, frame and stream figures are limits the *sender of the HELLO* enforces
on what it receives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .codes import ErrorCode
from .exceptions import ConfigurationError, ProtocolError
from .frames import MAX_STREAM_ID, MAX_WINDOW

SUPPORTED_VERSIONS = (1,)
SUPPORTED_FEATURES: tuple[str, ...] = ("resume",)
"""resume: streams outlive a replaced transport (docs/protocol.md §9)."""

MIN_INITIAL_WINDOW = 64 * 1024
MIN_FRAME = 16 * 1024
MAX_FRAME = 16 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """What one side announces in its HELLO.

    Attributes:
        initial_window: bytes the peer may send on a new stream before a WINDOW_UPDATE.
        max_window: the largest a stream's window grows to (auto-tuning ceiling).
        max_frame: the longest frame payload this side accepts.
        max_streams: streams the peer may have open towards this side at once.
        features: optional features this side supports.
        software: a free-form product string, for logs.
        session_window: not announced, local policy: the most the receive windows of all streams
            of a session may add up to. Window growth stops a quarter short of it (kept for new
            streams), and a new stream that would pass it is refused; so a session never holds more
            than this of data the peer sent.
    """

    initial_window: int = 256 * 1024
    max_window: int = 16 * 1024 * 1024
    max_frame: int = 256 * 1024
    max_streams: int = 1024
    features: tuple[str, ...] = field(default=SUPPORTED_FEATURES)
    software: str = "batchtunnel"
    session_window: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        _check(self, ConfigurationError)


@dataclass(frozen=True)
class Negotiated:
    """The outcome of the HELLO exchange."""

    version: int
    features: frozenset[str]
    peer: Settings


def _check(s: Settings, error: type[Exception]) -> None:
    if not MIN_INITIAL_WINDOW <= s.initial_window <= MAX_WINDOW:
        raise error(f"initial_window {s.initial_window} outside [{MIN_INITIAL_WINDOW}, 2**31-1]")
    if not s.initial_window <= s.max_window <= MAX_WINDOW:
        raise error(f"max_window {s.max_window} outside [initial_window, 2**31-1]")
    if not MIN_FRAME <= s.max_frame <= MAX_FRAME:
        raise error(f"max_frame {s.max_frame} outside [{MIN_FRAME}, {MAX_FRAME}]")
    if not 1 <= s.max_streams <= MAX_STREAM_ID:
        raise error(f"max_streams {s.max_streams} must be positive")
    if s.session_window < s.initial_window:
        raise error(f"session_window {s.session_window} is below initial_window {s.initial_window}")


def encode_hello(settings: Settings) -> bytes:
    """Return the HELLO payload announcing ``settings``."""
    body = {
        "versions": list(SUPPORTED_VERSIONS),
        "features": list(settings.features),
        "initial_window": settings.initial_window,
        "max_window": settings.max_window,
        "max_frame": settings.max_frame,
        "max_streams": settings.max_streams,
        "software": settings.software[:100],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_hello(payload: bytes, local: Settings) -> Negotiated:
    """Parse the peer's HELLO and negotiate.

    Raises:
        ProtocolError: malformed HELLO (PROTOCOL_ERROR) or no common version (VERSION_MISMATCH).
    """
    if not payload.lstrip()[:1] == b"{":  # before parsing: a deep nest of [ would exhaust the stack
        raise ProtocolError("HELLO is not a JSON object")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("HELLO is not UTF-8 JSON of a sensible depth") from None
    if not isinstance(body, dict):
        raise ProtocolError("HELLO is not a JSON object")
    versions = body.get("versions")
    if not isinstance(versions, list) or not versions or not all(_is_int(v) for v in versions):
        raise ProtocolError("HELLO versions must be a non-empty list of integers")
    common = set(versions) & set(SUPPORTED_VERSIONS)
    if not common:
        raise ProtocolError(
            f"no common protocol version: peer speaks {sorted(versions)[:8]}, "
            f"we speak {list(SUPPORTED_VERSIONS)}; upgrade the older side",
            ErrorCode.VERSION_MISMATCH,
        )
    features = body.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ProtocolError("HELLO features must be a list of strings")
    numbers: dict[str, int] = {}
    for key in ("initial_window", "max_window", "max_frame", "max_streams"):
        value = body.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError(f"HELLO {key} must be an integer")
        numbers[key] = value
    software = body.get("software", "")
    if not isinstance(software, str):
        raise ProtocolError("HELLO software must be a string")
    try:
        peer = Settings(features=tuple(features), software=software[:100], **numbers)
    except ConfigurationError as exc:
        raise ProtocolError(f"HELLO {exc}") from None
    return Negotiated(
        version=max(common),
        features=frozenset(features) & frozenset(local.features),
        peer=peer,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
