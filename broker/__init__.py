"""The broker, next to the hub: agents dial in, hub-side ports reach through them.

Data path: a hub-side TCP connection (``exposure``) becomes a stream of the
tunnel's agent session (``agent_endpoint`` -> ``batchtunnel.session``).
"""

from .service import Broker, BrokerConfig

__all__ = ["Broker", "BrokerConfig"]
