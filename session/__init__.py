"""asyncio glue shared by broker and agent: one tunnel session over one WebSocket.

``WebSocketLink`` carries binary messages (websockets' sans-I/O protocol in an
asyncio Protocol); ``TunnelSession`` runs a :class:`batchtunnel.wire.Connection`
over it and bridges each stream to a local TCP socket (``StreamBridge``).
The broker and the agent differ only in who opens streams.
"""

from .bridge import SERVICE_HUB_API, RefusingProtocol, StreamBridge
from .session import SESSION_HEADER, TunnelSession, serve_local
from .tasks import TaskOwner
from .websocket import Refusal, WebSocketLink

__all__ = [
    "SERVICE_HUB_API", "SESSION_HEADER", "Refusal", "RefusingProtocol",
    "StreamBridge", "TaskOwner", "TunnelSession", "WebSocketLink", "serve_local",
]
