"""Run ``batchtunnel`` with websockets' own sans-I/O framing in place of ``session/wsframes.py``.

    python -m bench.ws_codec BATCHTUNNEL-ARGS...      (from the repository root; bench/ab.py uses it)

The A/B that decides whether our codec earns its place: everything else (the handshake, the link, the
session) stays the same, and the frames are parsed by a ``websockets.protocol.Protocol`` in the OPEN
state and built by ``websockets.frames.Frame.serialize``, what websockets' own connections do.
A benchmark tool only: it replaces two names in the link's module before the command runs.
"""

from __future__ import annotations

import sys

from batchtunnel.session import websocket
from batchtunnel.session.wsframes import Buffer, CloseCode, Control, Opcode
from batchtunnel.wire import FramingError
from websockets.frames import Frame
from websockets.frames import Opcode as WsOpcode
from websockets.protocol import Protocol, Side


class ProtocolParser:
    """``wsframes.FrameParser``'s interface on websockets' parser (which takes whole frames only)."""

    def __init__(self, masked: bool, max_payload: int) -> None:
        # A server's Protocol expects masked frames, a client's unmasked ones.
        self._protocol = Protocol(Side.SERVER if masked else Side.CLIENT, max_size=max_payload)

    def feed(self, data: Buffer) -> list[bytes | Control]:
        self._protocol.receive_data(bytes(data))
        out: list[bytes | Control] = []
        for frame in self._protocol.events_received():
            if frame.opcode in (WsOpcode.BINARY, WsOpcode.CONT):
                if frame.data:
                    out.append(bytes(frame.data))
            elif frame.opcode is WsOpcode.TEXT:
                raise FramingError(CloseCode.UNSUPPORTED_DATA, "text messages are not accepted")
            else:
                code, reason = CloseCode.NO_STATUS, ""
                if frame.opcode is WsOpcode.CLOSE and self._protocol.close_rcvd is not None:
                    code, reason = self._protocol.close_rcvd.code, self._protocol.close_rcvd.reason
                out.append(Control(Opcode(frame.opcode), bytes(frame.data), code, reason))
        self._protocol.data_to_send()  # its own answers to PING and CLOSE: the link sends ours
        if self._protocol.parser_exc is not None:
            raise FramingError(CloseCode.PROTOCOL_ERROR, str(self._protocol.parser_exc))
        return out


def encode(opcode: Opcode, payload: Buffer, mask: bool) -> list[Buffer]:
    return [Frame(WsOpcode(int(opcode)), bytes(payload)).serialize(mask=mask)]


def main() -> None:
    websocket.FrameParser = ProtocolParser  # type: ignore[misc]
    websocket.encode = encode  # type: ignore[assignment]
    from batchtunnel.cli.main import main as batchtunnel

    sys.argv = ["batchtunnel", *sys.argv[1:]]
    batchtunnel()


if __name__ == "__main__":
    main()
