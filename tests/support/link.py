"""A TCP relay that can go silent, be cut, or refuse connections.

Silent (``freeze``): it stops moving bytes without closing anything, which is what a dead NAT
mapping or a pulled cable looks like to both ends. Cut (``cut``): every connection through it is
reset, as a proxy that kills long-lived WebSockets does. Down (``down``): new connections are reset
at once, until ``up``.
"""

from __future__ import annotations

import asyncio


class FreezableLink:
    """Relays 127.0.0.1:<port> to ``target_port``. ``freeze()`` silences current connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._frozen: list[asyncio.Event] = []  # one 'thawed' event per connection
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.refusing = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        for thawed in self._frozen:
            thawed.clear()

    def cut(self) -> int:
        """Reset every connection through the relay, both ways. Returns how many sockets were reset."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        return len(writers)

    def down(self) -> None:
        """Cut everything and reset new connections until ``up()``."""
        self.refusing = True
        self.freeze()
        self.cut()

    def up(self) -> None:
        self.refusing = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self.connections += 1
        thawed = asyncio.Event()
        thawed.set()
        self._frozen.append(thawed)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer, thawed)),
                 asyncio.ensure_future(self._pump(up_reader, writer, thawed))]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            self._writers.difference_update((writer, up_writer))
            self._frozen.remove(thawed)
            writer.close()
            up_writer.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, thawed: asyncio.Event) -> None:
        while True:
            await thawed.wait()
            data = await reader.read(65536)
            if not data:
                break
            await thawed.wait()
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
