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

This module chooses the proxy and is sans-I/O (``batchtunnel agent`` checks the choice before it
starts the job's command); agent/proxy_connect.py opens the connection through it.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ..wire import ConfigurationError


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
