"""TunnelSession alone, over stand-in links (no sockets): what its state says at each step."""

from __future__ import annotations

from typing import Any

from batchtunnel.session import TunnelSession
from batchtunnel.wire import Connection, Side


class StandInLink:
    """Takes what a session writes and does nothing with it."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.receiver: Any = None
        self.writable = False
        self.aborted = False

    def write(self, data: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def test_a_resume_counts_when_the_new_link_is_taken_not_later() -> None:
    """The tunnel's API showed the agent on a new link (connected since) with 0 resumes until the RESUME
    exchange ended, ~1 ms later: a reader in between saw a reconnection that was not one
    (tests/tunnel/test_lifecycle.py failed 1 in 40 runs under load, #12 item 12)."""
    conn, agent = Connection(Side.BROKER), Connection(Side.AGENT)
    conn.receive_data(agent.data_to_send())  # the HELLOs: "resume" negotiated
    old, new = StandInLink("old"), StandInLink("new")
    session = TunnelSession(conn, old, name="t", resume_grace=60)  # type: ignore[arg-type]
    conn.events_received()
    session.attach(new)  # type: ignore[arg-type]
    assert session.resumes == 1 and session.link is new and old.aborted
    assert old.receiver is None and new.receiver is session
