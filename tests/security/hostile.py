"""A hostile agent: a real TLS WebSocket to the broker that sends whatever bytes a test chooses.

The honest parts (the upgrade, HELLO) come from websockets and our own wire Connection; everything
after that is built frame by frame, so a test can break the protocol exactly where it wants.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import struct

from batchtunnel.wire import Connection, Settings, Side
from batchtunnel.wire.frames import FrameType, decode_goaway, encode_u32
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.frames import Frame, data_frame, frame, parse, ping_frame


class Refused(Exception):
    def __init__(self, status: int, body: str, retry_after: str | None) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.retry_after = retry_after


class HostileAgent:
    """``async with HostileAgent.connect(url, token, ca) as agent: ...``"""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._pending = bytearray()
        self._frames: collections.deque[Frame] = collections.deque()
        self.goaway: int | None = None  # the code of the last GOAWAY received
        self.session_id = ""  # what the broker's 101 named the session

    @classmethod
    async def open(cls, url: str, token: str | None, cafile: str, source: str = "127.0.0.1",
                   hello: bool = True, headers: dict[str, str] | None = None,
                   resume: bool = False) -> HostileAgent:
        """Upgrade (with ``token`` if given) from ``source``, then exchange HELLOs unless told not to;
        with ``resume``, the HELLO offers the resume feature (else the base protocol).

        Raises:
            Refused: the broker answered the upgrade with another status than 101.
        """
        ctx = ssl.create_default_context(cafile=cafile)
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            ws = await connect(url, ssl=ctx, additional_headers=headers, max_size=None, compression=None,
                               ping_interval=None, local_addr=(source, 0), open_timeout=10)
        except InvalidStatus as exc:
            response = exc.response
            raise Refused(response.status_code, (response.body or b"").decode().strip(),
                          response.headers.get("Retry-After")) from None
        agent = cls(ws)
        agent.session_id = ws.response.headers.get("Batchtunnel-Session", "")
        if hello:
            settings = Settings() if resume else Settings(features=())
            await ws.send(Connection(Side.AGENT, settings).data_to_send())
            frames = await agent.frames_until(lambda f: f.type == FrameType.HELLO)
            assert frames[-1].type == FrameType.HELLO
        return agent

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def frames_until(self, done, timeout: float = 10.0) -> list[Frame]:  # type: ignore[no-untyped-def]
        """Read frames until ``done(frame)``; PINGs are answered as a healthy agent would."""
        seen: list[Frame] = []

        async def read() -> list[Frame]:
            while True:
                while self._frames:
                    f = self._frames.popleft()
                    seen.append(f)
                    if f.type == FrameType.PING and not f.flags:
                        await self.ws.send(frame(FrameType.PING, 0, f.payload, flags=1))
                    if done(f):
                        return seen
                await self._receive()

        return await asyncio.wait_for(read(), timeout)

    async def _receive(self) -> None:
        message = await self.ws.recv()
        assert isinstance(message, bytes)
        self._pending += message
        for f in parse(self._pending):
            if f.type == FrameType.GOAWAY:
                self.goaway = decode_goaway(f.payload)[1]
            self._frames.append(f)

    async def closed_with(self, timeout: float = 10.0) -> tuple[int | None, int | None]:
        """Wait for the broker to end the session. Returns (GOAWAY code, WebSocket close code)."""

        async def drain() -> None:
            try:
                while True:
                    self._frames.clear()
                    await self._receive()
            except ConnectionClosed:
                pass

        await asyncio.wait_for(drain(), timeout)
        return self.goaway, self.ws.close_code

    async def overrun_window(self, stream_id: int, frame_size: int, limit: int = 64 * 1024 * 1024) -> None:
        """DATA on ``stream_id`` without waiting for credit, until the broker ends the session (or ``limit``
        bytes went). Whoever holds the stream's hub side must read nothing: once the broker's socket
        buffers are full it acknowledges no more, and a frame past the window must end the session.
        (The broker passes data on as it arrives, piece by piece, and acknowledges it once delivered:
        sending two windows in one message no longer shows an overrun.)"""
        chunk = data_frame(stream_id, b"a" * frame_size)
        with contextlib.suppress(ConnectionClosed):
            for _ in range(limit // frame_size):
                await self.send(chunk)

    async def alive(self) -> bool:
        """The session still answers a PING."""
        await self.ws.send(ping_frame(b"alive?!!"))
        frames = await self.frames_until(lambda f: f.type == FrameType.PING and f.flags == 1
                                         and f.payload == b"alive?!!")
        return bool(frames)

    async def close(self) -> None:
        await self.ws.close()


def reset_code(f: Frame) -> int:
    return int(struct.unpack("!I", f.payload)[0])


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(FrameType.WINDOW_UPDATE, stream_id, encode_u32(increment))
