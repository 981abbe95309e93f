"""The agent on a node whose only way out is an HTTP proxy (tinyproxy, a real one): it dials through
CONNECT, authenticates, says clearly what the proxy refused, and resumes its session when the proxy
restarts. The choice of proxy (flag, https_proxy, no_proxy) is checked without processes first."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from batchtunnel.agent.proxy import bypassed, choose_proxy, parse_proxy
from batchtunnel.wire import ConfigurationError

from tests.support.http_proxy import TINYPROXY, HttpProxy
from tests.support.processes import BIN, ProcessGroup, wait_until
from tests.support.tunnel import BrokerProcess, target_server

from .client import connect, download

pytestmark = pytest.mark.skipif(not Path(TINYPROXY).exists(), reason="needs tinyproxy (scripts/test.sh installs it)")

WSS = "wss://broker.example.org:8765/agent"
PASSWORD = "pr0xy-s3cret"


# -- which proxy, from what (no processes)

def test_the_environment_is_read_as_curl_reads_it() -> None:
    env = {"https_proxy": "http://proxy.site:3128", "HTTPS_PROXY": "http://other:1", "http_proxy": "http://plain:8"}
    proxy = choose_proxy(WSS, "", env)
    assert proxy is not None and (proxy.host, proxy.port, proxy.source) == ("proxy.site", 3128, "https_proxy")
    plain = choose_proxy("ws://broker.example.org:8765/agent", "", env)
    assert plain is not None and plain.host == "plain"
    assert choose_proxy(WSS, "", {"ALL_PROXY": "proxy.site"}) == parse_proxy("http://proxy.site:80", "ALL_PROXY")
    assert choose_proxy(WSS, "", {}) is None
    assert choose_proxy(WSS, "none", env) is None  # --proxy none: direct, whatever the environment says
    flag = choose_proxy(WSS, "http://flag:9", env)
    assert flag is not None and (flag.host, flag.source) == ("flag", "--proxy")


@pytest.mark.parametrize("no_proxy, direct", [
    ("example.org", True), (".example.org", True), ("broker.example.org:8765", True), ("*", True),
    ("localhost, EXAMPLE.ORG", True), ("ample.org", False), ("broker.example.org:443", False), ("", False),
])
def test_no_proxy_exempts_matching_brokers(no_proxy: str, direct: bool) -> None:
    env = {"https_proxy": "http://proxy.site:3128", "no_proxy": no_proxy}
    assert (choose_proxy(WSS, "", env) is None) == direct


def test_no_proxy_networks_and_addresses() -> None:
    assert bypassed("10.1.2.3", 8765, "10.0.0.0/8")
    assert not bypassed("10.1.2.3", 8765, "192.168.0.0/16,10.1.2.4")
    assert bypassed("fe80::1:2", 8765, "[fe80::1:2]:8765") and bypassed("fe80::1:2", 1, "fe80::1:2")


def test_credentials_are_decoded_and_never_shown() -> None:
    proxy = parse_proxy("http://al%40ice:p%3Ass@proxy.site:3128", "https_proxy")
    assert (proxy.username, proxy.password) == ("al@ice", "p:ss")
    assert "p:ss" not in f"{proxy} {proxy!r}" and str(proxy) == "http://proxy.site:3128 (with credentials)"
    assert b"Proxy-Authorization: Basic YWxAaWNlOnA6c3M=\r\n" in proxy.connect_request("b.example.org", 8765)


@pytest.mark.parametrize("url, says", [
    ("socks5://proxy.site:1080", "socks5:// proxies are not supported, only http://"),
    ("https://proxy.site:3128", "https:// proxies are not supported"),
    ("http://proxy.site:port", "https_proxy: not a proxy URL"),
    ("http://proxy.site:3128/path", "with no path"),
    ("http://:3128", "names no host"),
])
def test_unusable_proxy_urls_are_refused_by_name(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says.replace("/", ".")):
        choose_proxy(WSS, "", {"https_proxy": url})


# -- through a real proxy

@pytest.fixture
def proxy(broker: BrokerProcess, procs: ProcessGroup, tmp_path: Path) -> HttpProxy:
    return HttpProxy(procs, tmp_path / "proxy", [broker.agent_port], user="alice", password=PASSWORD)


def agent_check(broker: BrokerProcess, token: str, env: dict[str, str], *options: str) -> tuple[int, str]:
    done = subprocess.run([str(BIN / "batchtunnel"), "agent", "--check", "--url", broker.agent_url,
                           "--cafile", broker.pki.ca, "--connect-timeout", "5", *options],
                          capture_output=True, text=True, timeout=60,
                          env={"BATCHTUNNEL_TOKEN": token, "PATH": "/usr/bin:/bin", **env})
    assert PASSWORD not in done.stdout + done.stderr
    return done.returncode, done.stdout.strip()


async def test_the_agent_reaches_the_broker_only_through_the_proxy_and_resumes_across_its_restart(
        broker: BrokerProcess, proxy: HttpProxy, procs: ProcessGroup) -> None:
    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("proxied")
    agent = procs.start("agent", [str(BIN / "batchtunnel"), "agent", "--url", broker.agent_url, "--cafile",
                                  broker.pki.ca, "--backoff-max", "1"],
                        env={"BATCHTUNNEL_TOKEN": tunnel["token"], "https_proxy": proxy.url()})
    await asyncio.to_thread(wait_until, lambda: broker.agent_connected(tunnel["id"]), 15, "the agent to connect")
    assert proxy.connects(broker.agent_port) == 1
    port = broker.client.expose(tunnel["id"], 0, target_port)["port"]
    expected, received, size = await download(port, 32 * 1024 * 1024)
    assert (received, size) == (expected, 32 * 1024 * 1024)

    # A connection open across the proxy's restart keeps working: the session resumes.
    reader, writer = await connect(port)
    writer.write(b"echo\nbefore")
    assert await reader.readexactly(6) == b"before"
    proxy.restart()
    await asyncio.to_thread(wait_until, lambda: broker.tunnel(tunnel["id"])["agent"]["resumes"] >= 1, 30,
                            "the agent to resume its session through the restarted proxy")
    writer.write(b" after")
    assert await reader.readexactly(6) == b" after"
    writer.close()
    assert proxy.connects(broker.agent_port) >= 2
    log = agent.log()
    assert f"through the HTTP proxy {proxy.url(credentials=False)} (with credentials) (from https_proxy)" in log
    assert PASSWORD not in log


def test_check_goes_through_the_proxy_and_names_what_it_refused(broker: BrokerProcess, proxy: HttpProxy) -> None:
    tunnel = broker.client.create_tunnel("checked")
    status, line = agent_check(broker, tunnel["token"], {"https_proxy": proxy.url()})
    assert status == 0 and line.startswith("ok: "), line
    assert proxy.connects(broker.agent_port) == 3  # its CONNECT step, the TLS step and the token step

    status, line = agent_check(broker, tunnel["token"], {"https_proxy": proxy.url().replace(PASSWORD, "wrong")})
    assert status == 1 and line.startswith("proxy (from https_proxy): the proxy http://127.0.0.1:"), line
    assert "requires authentication (HTTP 401" in line and "credentials in its URL were refused" in line  # sic

    status, line = agent_check(broker, tunnel["token"], {"https_proxy": proxy.url(credentials=False)})
    assert status == 1 and "requires authentication (HTTP 407" in line and "give user:password" in line

    status, line = agent_check(broker, tunnel["token"], {"BATCHTUNNEL_PROXY": proxy.url()},
                               "--url", broker.agent_url.replace(str(broker.agent_port), str(broker.api_port)))
    assert status == 1 and f"refused CONNECT to localhost:{broker.api_port}: HTTP 403" in line, line

    # no_proxy names the broker: the (dead) proxy is not used at all.
    dead = f"http://127.0.0.1:{proxy.port + 1 if proxy.port < 65535 else 1}"
    status, line = agent_check(broker, tunnel["token"], {"https_proxy": dead, "no_proxy": "localhost"})
    assert status == 0 and line.startswith("ok: "), line
    status, line = agent_check(broker, tunnel["token"], {"https_proxy": dead})
    assert status == 1 and line.startswith("proxy (from https_proxy): cannot connect to the proxy"), line


def test_credentials_are_refused_on_the_command_line(broker: BrokerProcess, proxy: HttpProxy) -> None:
    done = subprocess.run([str(BIN / "batchtunnel"), "agent", "--url", broker.agent_url, "--proxy", proxy.url()],
                          capture_output=True, text=True, timeout=30,
                          env={"BATCHTUNNEL_TOKEN": "x.y", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "credentials on the command line would show in ps" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


@pytest.fixture
def hostile_proxy() -> Iterator[int]:
    """A 'proxy' that answers CONNECT with headers that never end."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                try:
                    while not stop.is_set():
                        conn.sendall(b"X-Filler: " + b"y" * 1000 + b"\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def test_a_proxy_that_never_ends_its_headers_is_cut_off(broker: BrokerProcess, hostile_proxy: int) -> None:
    tunnel = broker.client.create_tunnel("checked")
    status, line = agent_check(broker, tunnel["token"], {"https_proxy": f"http://127.0.0.1:{hostile_proxy}"})
    assert status == 1 and "sent more than 16384 bytes of headers" in line, line
