"""asyncio glue shared by broker and agent: one tunnel session over one WebSocket.

Read it downwards, as a byte travels::

    session.py     TunnelSession: runs a wire Connection over a link, bridges each stream
    ├── bridge.py      StreamBridge: one stream <-> one local TCP socket, backpressure both ways
    ├── heartbeat.py   PINGs, and the link declared dead after a silence
    └── websocket.py   WebSocketLink: the WebSocket under the session, as an asyncio Protocol
        ├── handshake.py   the HTTP upgrade (websockets' sans-I/O protocols)
        └── wsframes.py    RFC 6455 framing once open (sans I/O)
    tasks.py       TaskOwner: every background task has an owner

The broker and the agent differ only in who opens streams.
"""

from .bridge import RefusingProtocol, StreamBridge, serve_local
from .handshake import CHECK_HEADER, SESSION_HEADER, Refusal
from .session import TunnelSession
from .tasks import TaskOwner
from .websocket import WebSocketLink

__all__ = [
    "CHECK_HEADER", "SESSION_HEADER", "Refusal", "RefusingProtocol", "StreamBridge", "TaskOwner", "TunnelSession",
    "WebSocketLink", "serve_local",
]
