"""asyncio glue shared by broker and agent: one tunnel session over a WebSocket.

``TunnelSession`` runs a :class:`batchtunnel.wire.Connection` over a
:class:`MessageTransport` and bridges each stream to a local TCP socket
(``StreamBridge``). The broker and the agent differ only in who opens streams.
"""

from .bridge import StreamBridge
from .session import SessionClosed, TunnelSession, serve_local
from .tasks import TaskOwner
from .transport import MessageTransport, TransportClosed

__all__ = [
    "MessageTransport", "SessionClosed", "StreamBridge", "TaskOwner", "TransportClosed", "TunnelSession", "serve_local",
]
