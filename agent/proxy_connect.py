"""The CONNECT through an HTTP proxy that agent/proxy.py chose: a socket to the broker, ready for TLS."""

from __future__ import annotations

import asyncio
import re
import socket

from ..wire import ProxyRefused
from .proxy import Proxy

MAX_ANSWER = 16 * 1024
"""Longest proxy answer (status line and headers) read before giving up on it."""

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?\r\n")


async def open_through(proxy: Proxy, host: str, port: int, timeout: float) -> socket.socket:
    """A connected socket to ``host:port`` through ``proxy``'s CONNECT, ready for TLS (or the WebSocket).

    Raises OSError when the proxy cannot be reached, ProxyRefused when it answers anything but 2xx
    (or not HTTP), asyncio.TimeoutError when it accepts but does not answer within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
            break
        except asyncio.TimeoutError:
            sock.close()
            raise OSError(f"cannot connect to the proxy {proxy}: timed out") from None
        except OSError as exc:
            sock.close()
            last = OSError(exc.errno, f"cannot connect to the proxy {proxy}: {exc.strerror or exc}")
        except BaseException:
            sock.close()
            raise
    else:
        raise last or OSError(f"the proxy {proxy} resolves to no address")
    try:
        await asyncio.wait_for(_handshake(loop, sock, proxy, host, port), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def _handshake(loop: asyncio.AbstractEventLoop, sock: socket.socket, proxy: Proxy, host: str,
                     port: int) -> None:
    await loop.sock_sendall(sock, proxy.connect_request(host, port))
    answer = b""
    while b"\r\n\r\n" not in answer:
        if len(answer) > MAX_ANSWER:
            raise ProxyRefused(0, f"the proxy {proxy} sent more than {MAX_ANSWER} bytes of headers")
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ProxyRefused(0, f"the proxy {proxy} closed the connection without answering CONNECT")
        answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    status = _STATUS.match(head + b"\r\n")
    if status is None:
        raise ProxyRefused(0, f"the proxy {proxy} did not answer in HTTP: {head[:60]!r}")
    code = int(status.group(1))
    reason = (status.group(2) or b"").decode("latin-1")[:100]
    if code in (401, 407):  # 407 is the standard; some proxies (tinyproxy 1.11) answer bad credentials with 401
        why = "the credentials in its URL were refused" if proxy.username else "give user:password in its URL"
        raise ProxyRefused(code, f"the proxy {proxy} requires authentication (HTTP {code} {reason}): {why}")
    if not 200 <= code < 300:
        raise ProxyRefused(code, f"the proxy {proxy} refused CONNECT to {host}:{port}: HTTP {code} {reason}"
                                 + (" (does it allow CONNECT to this port?)" if code == 403 else ""))
    if rest:  # the broker speaks only after the agent: anything here came from the proxy
        raise ProxyRefused(code, f"the proxy {proxy} sent data after its answer to CONNECT")
