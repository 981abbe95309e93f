"""``batchtunnel agent --check``: can this node reach the broker with this token? One line says.

Run on a compute node (by a user, or an admin from a job) with the agent's own options: the name
resolves, a TCP connection opens (or the HTTP proxy opens one with CONNECT), TLS verifies the broker
(CA or pinned fingerprint), and the broker accepts the token. Each step names what to fix when it
fails. The last step asks the broker to check the credential only (``Batchtunnel-Check``): it answers
without starting a session, so a running agent with the same token is not replaced.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from .. import __version__
from ..session import CHECK_HEADER, WebSocketLink
from ..wire import HandshakeRejected, PeerRejected, ProxyRefused
from .config import AgentConfig
from .dialer import Agent
from .proxy_connect import open_through


@dataclass
class CheckResult:
    ok: bool
    line: str


async def check(config: AgentConfig) -> CheckResult:
    """Run every step until one fails."""
    agent = Agent(config)  # its TLS context, certificate pins and proxy, exactly as the agent uses them
    url = urlsplit(config.url)
    host, port = config.broker_address
    proxy = agent.proxy
    timeout = config.connect_timeout
    loop = asyncio.get_running_loop()
    if proxy is None:
        try:
            addresses = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            return CheckResult(False, f"DNS: cannot resolve {host}: {_why(exc)}")
        shown = ", ".join(sorted({str(a[4][0]) for a in addresses}))
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
        except (OSError, asyncio.TimeoutError) as exc:
            return CheckResult(False, f"TCP: cannot connect to {host}:{port} ({shown}): {_why(exc)}; the node needs "
                                      "outbound TCP to the broker's port (a firewall, a proxy, or the wrong port?)")
    else:
        try:
            (await open_through(proxy, host, port, timeout)).close()
        except ProxyRefused as exc:
            return CheckResult(False, f"proxy (from {proxy.source}): {exc}")
        except asyncio.TimeoutError:
            return CheckResult(False, f"proxy (from {proxy.source}): {proxy} accepted the connection but did not "
                                      f"answer CONNECT within {timeout:.0f} s")
        except OSError as exc:
            return CheckResult(False, f"proxy (from {proxy.source}): {_why(exc)}")

    async def connect(ssl_context: ssl.SSLContext) -> asyncio.StreamWriter:
        if proxy is None:
            return (await asyncio.open_connection(host, port, ssl=ssl_context, server_hostname=host))[1]
        sock = await open_through(proxy, host, port, timeout)
        return (await asyncio.open_connection(sock=sock, ssl=ssl_context, server_hostname=host))[1]

    ssl_context = agent.tls_context()
    if ssl_context is not None:
        try:
            writer = await asyncio.wait_for(connect(ssl_context), timeout)
        except ssl.SSLCertVerificationError as exc:
            return CheckResult(False, f"TLS: the broker's certificate is not trusted ({exc.verify_message}): give the "
                                      "CA that signed it (--cafile) or pin it (--fingerprint)")
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ProxyRefused) as exc:
            return CheckResult(False, f"TLS: no TLS handshake with {host}:{port}: {_why(exc)} (is it the broker's "
                                      "agent port, and not behind a proxy that terminates TLS?)")
        problem = agent.verify_pin(writer.transport)
        writer.close()
        if problem is not None:
            return CheckResult(False, f"TLS: {problem}")
    headers = {"Authorization": f"Bearer {config.token}", "User-Agent": f"batchtunnel-agent/{__version__}",
               CHECK_HEADER: "1"}
    link = WebSocketLink.client(config.url, headers, agent.verify_pin)
    try:
        await agent.open_link(link, ssl_context, timeout)
        await link.wait_handshake(timeout)
    except HandshakeRejected as exc:
        if exc.status == 200:
            return CheckResult(True, f"ok: {host}:{port} reached, TLS verified, {exc}")
        if exc.status == 429:
            return CheckResult(False, f"token: this address is blocked after failed authentications; retry in "
                                      f"{exc.retry_after or 0:.0f} s ({exc})")
        if exc.status == 404:
            return CheckResult(False, f"URL: the broker has no agent endpoint at {url.path or '/'} ({exc})")
        return CheckResult(False, f"token: the broker refused it (HTTP {exc.status}: {exc}); a deleted tunnel, an "
                                  "expired credential, or another tunnel's token?")
    except PeerRejected as exc:
        return CheckResult(False, f"TLS: {exc}")
    except ProxyRefused as exc:
        return CheckResult(False, f"proxy (from {proxy.source if proxy else '?'}): {exc}")
    except (OSError, asyncio.TimeoutError) as exc:
        return CheckResult(False, f"WebSocket: no answer to the upgrade from {host}:{port}: {_why(exc)}")
    finally:
        link.abort()
    return CheckResult(False, "the broker accepted a session instead of checking the token: it is older than "
                              "this agent (the credential is valid)")


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
