"""Tunnels the broker knows: their credentials, agents and hub-side exposures."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..session import RefusingProtocol, StreamBridge, TunnelSession
from ..wire import ApiError, AuthenticationError, ErrorCode, describe_code
from . import tokens
from .exposure import Exposure
from .store import Store, TunnelRecord

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]{0,100}$")
MAX_LIFETIME = 366 * 24 * 3600.0
"""The longest expiry a tunnel may be given, seconds."""


@dataclass
class Tunnel:
    """A tunnel: one job's agent, and the hub-side ports that reach through it."""

    id: str
    name: str
    token_hash: str
    created: float
    expires: float | None = None
    session: TunnelSession | None = None
    agent_address: str | None = None
    connected_since: float | None = None
    disconnected_since: float | None = None
    exposures: dict[tuple[str, int], Exposure] = field(default_factory=dict)
    connections_total: int = 0
    deleted: bool = False
    on_connection_end: Callable[[float], None] | None = None  # seconds a hub-side connection lasted

    def refusal(self, session: TunnelSession, now: float) -> ErrorCode | None:
        """Why ``session`` may no longer carry a new stream of this tunnel (None: it may).

        Checked for every stream, not only when the agent authenticated: a tunnel deleted, an agent
        replaced or a credential expired since then ends the session's right to streams."""
        if self.deleted:
            return ErrorCode.TUNNEL_DELETED
        if self.session is not session:
            return ErrorCode.REPLACED
        if self.expires is not None and now >= self.expires:
            return ErrorCode.CREDENTIAL_EXPIRED
        return None

    def connection_made(self, rport: int) -> asyncio.Protocol:
        """A hub-side connection to one of the tunnel's exposures: a stream to ``rport`` on the agent's
        node, or a refusal (the client sees a reset) when no session of this tunnel can carry it."""
        self.connections_total += 1
        session = self.session
        if session is None or not session.carries_streams:
            log.info("tunnel %s: connection to node port %d refused: no agent connected", self.id, rport)
            return RefusingProtocol()
        refusal = self.refusal(session, time.time())  # checked for every stream
        if refusal is not None:
            log.warning("tunnel %s: connection to node port %d refused: %s", self.id, rport, describe_code(refusal))
            session.close(refusal, "this session no longer holds the tunnel")
            return RefusingProtocol()
        return _TimedBridge(session, rport, self.on_connection_end)

    def expose(self, host: str, port: int, rport: int) -> Exposure:
        """A new (not yet open) exposure of this tunnel on ``host:port``."""
        return Exposure(self.id, host, port, rport, self.connection_made)

    @property
    def agent_connected(self) -> bool:
        """The agent's session is up, on a live link (not waiting for the agent to come back)."""
        session = self.session
        return session is not None and session.carries_streams and not session.suspended

    def as_json(self) -> dict[str, Any]:
        """The public view: never the token or its hash."""
        session = self.session if self.agent_connected else None
        waiting = self.session if self.session is not None and self.session.suspended else None
        return {
            "id": self.id,
            "name": self.name,
            "created": self.created,
            "expires": self.expires,
            "agent": {
                "connected": session is not None,
                "address": self.agent_address if session is not None else None,
                "connected_since": self.connected_since if session is not None else None,
                "disconnected_since": None if session is not None else (
                    waiting.suspended_since if waiting is not None else self.disconnected_since),
                "suspended": waiting is not None,
                "streams_waiting": waiting.stream_count if waiting is not None else 0,
                "resumes": self.session.resumes if self.session is not None else 0,
                "rtt_ms": round(session.rtt * 1000, 3) if session and session.rtt is not None else None,
                "streams": session.stream_count if session else 0,
                "streams_from_agent": session.streams_accepted if session else 0,
                "bytes_in": self.session.bytes_in if self.session is not None else 0,
                "bytes_out": self.session.bytes_out if self.session is not None else 0,
            },
            "exposures": [e.as_json() for e in self.exposures.values()],
            "connections_total": self.connections_total,
        }


class _TimedBridge(StreamBridge):
    """A hub-side connection's stream that reports how long the connection lasted."""

    def __init__(self, session: TunnelSession, rport: int, ended: Callable[[float], None] | None) -> None:
        super().__init__(session, None, rport)
        self._since = time.monotonic()
        self._ended = ended

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._ended is not None:
            self._ended(time.monotonic() - self._since)


class Registry:
    """Tunnels by id, backed by a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.tunnels: dict[str, Tunnel] = {}
        self.on_connection_end: Callable[[float], None] = lambda seconds: None  # metrics.py's histogram
        self.deleted_connections_total = 0  # hub-side connections of tunnels deleted since the start
        for record in store.tunnels():
            self.tunnels[record.id] = Tunnel(record.id, record.name, record.token_hash, record.created,
                                             record.expires, disconnected_since=time.time(),
                                             on_connection_end=self._connection_ended)

    def _connection_ended(self, seconds: float) -> None:
        self.on_connection_end(seconds)

    @property
    def connections_total(self) -> int:
        """Hub-side connections accepted since the broker started, deleted tunnels' included."""
        return self.deleted_connections_total + sum(t.connections_total for t in self.tunnels.values())

    def create(self, name: str, expires_in: float | None = None) -> tuple[Tunnel, str]:
        """Create a tunnel. Returns it and its agent token, which is never available again.

        ``expires_in``: seconds after which the token is refused and the agent disconnected."""
        if not NAME_RE.match(name):
            raise ApiError(400, "name: up to 100 characters from A-Z a-z 0-9 _ . @ + -")
        if expires_in is not None and not 0 < expires_in <= MAX_LIFETIME:
            raise ApiError(400, f"expires_in: seconds, more than 0 and at most {MAX_LIFETIME:.0f}")
        tunnel_id = "t" + secrets.token_hex(8)
        token, token_hash = tokens.new_token(tunnel_id)
        now = time.time()
        expires = now + expires_in if expires_in is not None else None
        tunnel = Tunnel(tunnel_id, name, token_hash, now, expires, disconnected_since=now,
                        on_connection_end=self._connection_ended)
        self.store.add_tunnel(TunnelRecord(tunnel_id, name, token_hash, now, expires))
        self.tunnels[tunnel_id] = tunnel
        log.info("tunnel %s created (name %r)", tunnel_id, name)
        return tunnel, token

    def get(self, tunnel_id: str) -> Tunnel:
        tunnel = self.tunnels.get(tunnel_id)
        if tunnel is None:
            raise ApiError(404, f"no tunnel {tunnel_id!r}")
        return tunnel

    def authenticate(self, token: str | None) -> Tunnel:
        """Return the tunnel ``token`` belongs to.

        Raises:
            AuthenticationError: with a reason safe to log (it never contains the token).
        """
        if not token:
            raise AuthenticationError("no credential presented")
        parts = tokens.split_token(token)
        if parts is None:
            raise AuthenticationError("malformed credential")
        tunnel = self.tunnels.get(parts[0])
        # Compare even when the tunnel is unknown, so timing does not reveal which ids exist.
        ok = tokens.matches(parts[1], tunnel.token_hash if tunnel else "0" * 64)
        if tunnel is None or not ok:
            raise AuthenticationError("unknown tunnel or wrong credential")
        if tunnel.expires is not None and time.time() >= tunnel.expires:
            raise AuthenticationError(f"the credential of tunnel {tunnel.id} expired")
        return tunnel

    async def delete(self, tunnel_id: str) -> None:
        tunnel = self.get(tunnel_id)
        tunnel.deleted = True
        del self.tunnels[tunnel_id]
        self.deleted_connections_total += tunnel.connections_total
        self.store.delete_tunnel(tunnel_id)
        for exposure in list(tunnel.exposures.values()):
            await exposure.close()
        tunnel.exposures.clear()
        if tunnel.session is not None:
            tunnel.session.close(ErrorCode.TUNNEL_DELETED, "the tunnel was deleted")
        log.info("tunnel %s deleted", tunnel_id)
