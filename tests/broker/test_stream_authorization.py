"""Every stream is authorized against the tunnel's current state, not only the agent's handshake."""

from __future__ import annotations

from typing import cast

from batchtunnel.broker.registry import Tunnel
from batchtunnel.session import TunnelSession
from batchtunnel.wire import ErrorCode


def session() -> TunnelSession:
    return cast(TunnelSession, object())


def test_only_the_current_session_of_a_live_unexpired_tunnel_may_carry_streams() -> None:
    current, old = session(), session()
    tunnel = Tunnel("t1", "", "hash", created=0.0, expires=100.0, session=current)
    assert tunnel.refusal(current, now=50.0) is None
    assert tunnel.refusal(old, now=50.0) == ErrorCode.REPLACED
    assert tunnel.refusal(current, now=100.0) == ErrorCode.CREDENTIAL_EXPIRED
    tunnel.deleted = True
    assert tunnel.refusal(current, now=50.0) == ErrorCode.TUNNEL_DELETED


def test_a_tunnel_without_expiry_never_expires() -> None:
    current = session()
    tunnel = Tunnel("t1", "", "hash", created=0.0, session=current)
    assert tunnel.refusal(current, now=1e12) is None
    assert Tunnel("t2", "", "hash", created=0.0).as_json()["expires"] is None
