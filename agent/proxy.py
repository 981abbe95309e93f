"""Reaching the broker through an HTTP proxy, as curl and pip do: ``CONNECT host:port``, then TLS inside.

Compute nodes often reach the outside only through a site proxy. Which proxy, in this order:

1. ``--proxy URL`` (or ``BATCHTUNNEL_PROXY``, or ``proxy`` in the config file); ``--proxy none`` dials
   directly whatever the environment says;
2. the environment, as curl reads it: ``https_proxy`` / ``HTTPS_PROXY`` for a wss:// broker
   (``http_proxy`` / ``HTTP_PROXY`` for ws://), then ``all_proxy`` / ``ALL_PROXY``; no proxy when the
   broker's host matches ``no_proxy`` / ``NO_PROXY`` (the standard library's matching: ``*``, host
   names and domain suffixes, ``host:port``).

Only ``http://`` proxies: the agent speaks plain HTTP to the proxy and TLS to the broker *through*
it, so the proxy sees the broker's name and port, never the token. Proxy credentials come as
``http://user:password@host:port`` (percent-encoded) and go out as ``Proxy-Authorization: Basic``;
they are never logged, and ``batchtunnel agent`` refuses them on its command line, where ``ps``
would show them.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ..wire import ConfigurationError, ProxyRefused

MAX_ANSWER = 16 * 1024
"""Longest proxy answer (status line and headers) read before giving up on it."""

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?\r\n")


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy, and where the setting came from (for the log)."""

    host: str
    port: int
    source: str
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    def __str__(self) -> str:
        """The proxy without its credentials: what logs show."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}" + (" (with credentials)" if self.username else "")

    def connect_request(self, host: str, port: int) -> bytes:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if self.username:
            pair = f"{self.username}:{self.password}".encode()
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(pair).decode("ascii"))
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_proxy(url: str, source: str) -> Proxy:
    """A proxy URL as curl takes it (``http://[user:password@]host[:port]``; no scheme means http://)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{source}: not a proxy URL ({exc})") from None
    if parts.scheme.lower() != "http":
        raise ConfigurationError(
            f"{source}: {parts.scheme}:// proxies are not supported, only http:// (the agent's TLS to the "
            "broker goes through the proxy's CONNECT; give the proxy's http:// address)")
    if not parts.hostname:
        raise ConfigurationError(f"{source}: the proxy URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(f"{source}: a proxy URL is http://[user:password@]host[:port], with no path")
    return Proxy(parts.hostname, port or 80, source,
                 unquote(parts.username or ""), unquote(parts.password or ""))


def address(url: str) -> tuple[str, int]:
    """The host and port a ws:// or wss:// URL names (the scheme's port if it gives none)."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "wss" else 80)


def choose_proxy(broker_url: str, setting: str | None, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy to reach the broker through, or None to dial directly (see the module's docstring)."""
    if setting:
        return None if setting.strip().lower() == "none" else parse_proxy(setting, "--proxy")
    host, port = address(broker_url)
    names = ("https_proxy", "HTTPS_PROXY") if broker_url.startswith("wss:") else ("http_proxy", "HTTP_PROXY")
    for name in (*names, "all_proxy", "ALL_PROXY"):
        value = environ.get(name, "").strip()
        if value:
            break
    else:
        return None
    if bypassed(host, port, environ.get("no_proxy") or environ.get("NO_PROXY") or ""):
        return None
    return parse_proxy(value, name)


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Does ``no_proxy`` (comma-separated, as curl reads it) exempt ``host:port``? Entries: ``*``; a
    name, matching itself and its subdomains (a leading dot is ignored); an IP address or a CIDR
    network (``10.0.0.0/8``); any of these with ``:port`` to exempt only that port."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if entry == "*":
            return True
        name, only_port = entry, ""
        if re.fullmatch(r"[^:]+:\d+|\[[^]]+\]:\d+", entry):  # host:port, [v6]:port; a bare v6 has no port
            name, _, only_port = entry.rpartition(":")
        if only_port and int(only_port) != port:
            continue
        name = name.strip("[]").lstrip(".")
        if not name:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
        elif host == name or host.endswith("." + name):
            return True
    return False


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
