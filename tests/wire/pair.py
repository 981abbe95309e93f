"""Two connected wire Connections with a lossless in-memory link, for synchronous tests."""

from __future__ import annotations

from batchtunnel.wire import Connection, Event, SessionStarted, Settings, Side


class Pair:
    """A broker-side and an agent-side Connection; ``pump()`` moves bytes both ways."""

    def __init__(self, broker: Settings | None = None, agent: Settings | None = None) -> None:
        self.broker = Connection(Side.BROKER, broker)
        self.agent = Connection(Side.AGENT, agent)
        self.events: dict[str, list[Event]] = {"broker": [], "agent": []}
        self.pump()
        assert any(isinstance(e, SessionStarted) for e in self.take("broker"))
        assert any(isinstance(e, SessionStarted) for e in self.take("agent"))

    def pump(self) -> None:
        """Move bytes until both directions are quiet."""
        while True:
            to_agent = self.broker.data_to_send()
            to_broker = self.agent.data_to_send()
            if not to_agent and not to_broker:
                return
            if to_agent:
                self.agent.receive_data(to_agent)
            if to_broker:
                self.broker.receive_data(to_broker)
            self.events["agent"] += self.agent.events_received()
            self.events["broker"] += self.broker.events_received()

    def take(self, side: str) -> list[Event]:
        events, self.events[side] = self.events[side], []
        return events
