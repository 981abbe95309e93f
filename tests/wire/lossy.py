"""Two wire Connections over a link that delays bytes and can be cut, losing what is in flight."""

from __future__ import annotations

from collections import defaultdict

from batchtunnel.wire import (
    Connection,
    DataReceived,
    Event,
    SessionResumed,
    SessionStarted,
    Settings,
    Side,
    StreamEnded,
    StreamOpened,
)


class End:
    """One side: its Connection, what it received per stream, and data not yet acknowledged."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.received: dict[int, bytearray] = defaultdict(bytearray)
        self.ended: set[int] = set()
        self.opened: list[tuple[int, int]] = []
        self.unacked: dict[int, int] = defaultdict(int)
        self.events: list[Event] = []
        self.in_flight = bytearray()  # sent by this side, not yet delivered to the other

    def collect(self) -> None:
        for event in self.conn.events_received():
            self.events.append(event)
            if isinstance(event, DataReceived):
                self.received[event.stream_id] += event.data
                self.unacked[event.stream_id] += len(event.data)
            elif isinstance(event, StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, StreamOpened):
                self.opened.append((event.stream_id, event.port))

    def acknowledge(self) -> None:
        """The local sockets took everything delivered (what a bridge does when not backed up)."""
        unacked, self.unacked = self.unacked, defaultdict(int)
        for sid, n in unacked.items():
            self.conn.acknowledge_received(sid, n)

    def take_output(self) -> None:
        self.in_flight += self.conn.data_to_send()


class LossyPair:
    """``transmit`` moves bytes, ``cut`` loses those in flight and resumes on a new link."""

    def __init__(self, broker: Settings | None = None, agent: Settings | None = None) -> None:
        self.broker = End(Connection(Side.BROKER, broker))
        self.agent = End(Connection(Side.AGENT, agent))
        self.settle()
        assert any(isinstance(e, SessionStarted) for e in self.broker.events)
        assert any(isinstance(e, SessionStarted) for e in self.agent.events)

    def ends(self) -> tuple[End, End]:
        return self.broker, self.agent

    def transmit(self, sender: End, limit: int | None = None) -> int:
        """Deliver up to ``limit`` bytes (default all) that ``sender`` sent; returns how many."""
        sender.take_output()
        receiver = self.agent if sender is self.broker else self.broker
        n = len(sender.in_flight) if limit is None else min(limit, len(sender.in_flight))
        chunk = bytes(sender.in_flight[:n])
        del sender.in_flight[:n]
        if chunk:
            receiver.conn.receive_data(chunk)
        receiver.collect()
        return n

    def settle(self, acknowledge: bool = True) -> None:
        """Move bytes (and acknowledge deliveries) until both directions are quiet."""
        while True:
            if acknowledge:
                self.broker.acknowledge()
                self.agent.acknowledge()
            moved = self.transmit(self.broker) + self.transmit(self.agent)
            if not moved and not (acknowledge and (self.broker.unacked or self.agent.unacked)):
                return

    def cut(self, to_agent: int = 0, to_broker: int = 0) -> None:
        """Deliver only the first bytes in flight each way, lose the rest: the link died."""
        self.transmit(self.broker, to_agent)
        self.transmit(self.agent, to_broker)
        for end in self.ends():
            end.take_output()
            end.in_flight.clear()
            assert end.conn.suspend()

    def resume(self) -> list[SessionResumed]:
        """A new link: both sides send RESUME, then everything settles."""
        for end in self.ends():
            end.conn.resume()
        self.settle()
        return [e for end in self.ends() for e in end.events if isinstance(e, SessionResumed)]
