"""The admin API's listening socket: TCP on loopback or a unix socket, with bounds of its own.

Anyone with a shell on the hub host can reach a loopback port. aiohttp alone puts no time limit on
a request that is sent slowly and no cap on connections: ~20,000 half-sent requests took a broker to
its descriptor limit, and then agents could not connect and downloads were reset. So here:

- at most ``max_connections`` connections at once; one more is closed as it is accepted (its
  descriptor is released at once, never counted against the agents' and exposures' ones);
- every connection lives at most ``timeout`` seconds, whatever it does: an admin request is small
  and quick, so this bounds slow headers, slow bodies and idle keep-alives alike;
- a unix socket (``unix:/run/batchtunnel/api.sock``) instead of a port, its file mode (0600 by
  default) the access control: only the hub's user (or group) can even connect.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import stat
import time

from aiohttp import web

from ..session import RefusingProtocol, TaskOwner

log = logging.getLogger(__name__)

UNIX_PREFIX = "unix:"
ACCESS_LOG = logging.getLogger("batchtunnel.broker.access")
LOG_INTERVAL = 10.0
"""Seconds between two log lines about refused or timed-out API connections."""


class ApiListener:
    """Serves ``app`` until ``close()``.

    Args:
        max_connections: connections at once.
        timeout: seconds a connection may live.
        socket_mode: file mode of a unix socket.
        name: for log lines (the metrics listener is one too).
        access_log: log each request to ``batchtunnel.broker.access`` (--api-access-log).
    """

    def __init__(self, app: web.Application, max_connections: int = 64, timeout: float = 10.0,
                 socket_mode: int = 0o600, name: str = "admin API", access_log: bool = False) -> None:
        self.app = app
        self.name = name
        self.access_log = access_log
        self.max_connections = max_connections
        self.timeout = timeout
        self.socket_mode = socket_mode
        self.refused_total = 0
        self.timed_out_total = 0
        self.address = ""
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._born: dict[object, float] = {}  # each live connection (aiohttp's handler): when it was first seen
        self._tasks = TaskOwner(name)
        self._logged = -math.inf
        self._path: str | None = None

    async def open(self, host: str, port: int) -> int:
        """Listen on ``host:port``, or on the unix socket ``host`` = ``unix:PATH`` (``port`` ignored).
        Returns the TCP port bound (0 for a unix socket).

        Raises:
            OSError: the address cannot be bound.
        """
        # One line per request: the client, the request line (paths never hold a secret: tokens travel in
        # the Authorization header, which is not logged), the status, the size, the seconds.
        self._runner = web.AppRunner(self.app, access_log=ACCESS_LOG if self.access_log else None,
                                     access_log_format='%a "%r" %s %b %Tf', handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        if host.startswith(UNIX_PREFIX):
            sock = self._unix_socket(host[len(UNIX_PREFIX):])
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=256)
        self._server = await asyncio.get_running_loop().create_server(self._protocol, sock=sock)
        self._tasks.spawn(self._expire(), "expire slow connections")
        if self._path is not None:
            self.address = f"{UNIX_PREFIX}{self._path}"
            return 0
        bound: int = sock.getsockname()[1]
        self.address = f"http://{host}:{bound}"
        return bound

    def _unix_socket(self, path: str) -> socket.socket:
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                raise OSError(f"{path} exists and is not a socket")
            os.unlink(path)  # left by an earlier broker that did not stop cleanly
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o777 & ~self.socket_mode)  # never more open than asked, not even for a moment
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, self.socket_mode)
        sock.listen(256)
        self._path = path
        return sock

    def _protocol(self) -> asyncio.Protocol:
        assert self._runner is not None and self._runner.server is not None
        if len(self._runner.server.connections) >= self.max_connections:
            self.refused_total += 1
            self._say(f"{self.name} connection closed: {self.max_connections} are open (--api-max-connections); "
                      f"{self.refused_total} refused so far")
            return RefusingProtocol()
        handler: asyncio.Protocol = self._runner.server()
        return handler

    async def _expire(self) -> None:
        """Abort connections older than ``timeout`` (checked each second)."""
        assert self._runner is not None and self._runner.server is not None
        server = self._runner.server
        while True:
            await asyncio.sleep(min(1.0, self.timeout / 2))
            now = time.monotonic()
            live = server.connections
            self._born = {handler: self._born.get(handler, now) for handler in live}
            for handler, born in self._born.items():
                transport = getattr(handler, "transport", None)
                if now - born > self.timeout and transport is not None:
                    self.timed_out_total += 1
                    transport.abort()
                    self._say(f"{self.name} connection closed after {self.timeout:.0f} s (--api-timeout); "
                              f"{self.timed_out_total} so far")

    def _say(self, message: str) -> None:
        now = time.monotonic()
        if now - self._logged >= LOG_INTERVAL:
            self._logged = now
            log.warning("%s", message)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._tasks.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
            self._path = None
