"""The broker behind a TLS-terminating reverse proxy (nginx, as sites run Apache or nginx in front of
the hub): agents dial the proxy over wss://, the proxy speaks plain WebSocket to the broker on
loopback, and the broker takes the agent's address from X-Forwarded-For because the proxy is trusted.
docs/security.md shows the same nginx configuration."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.processes import BIN, ProcessGroup, free_port, port_open, wait_until
from tests.support.tunnel import BrokerProcess, Pki, target_server
from tests.tunnel import client

from .hostile import HostileAgent, Refused

pytestmark = pytest.mark.skipif(not shutil.which("nginx"), reason="needs nginx (scripts/test.sh installs it)")

NGINX_CONF = """\
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /agent {{
            proxy_pass http://127.0.0.1:{broker_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }}
    }}
}}
"""


async def test_agents_through_nginx_terminating_tls(procs: ProcessGroup, pki: Pki, tmp_path: Path) -> None:
    broker = BrokerProcess(procs, pki, tmp_path, "--trusted-proxy", "127.0.0.1", "--auth-failure-limit", "2",
                           plain=True)
    assert broker.proc is not None
    assert "TLS is terminated by the reverse proxy" in broker.proc.log()
    nginx_port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp_path, port=nginx_port, cert=pki.cert, key=pki.key,
                                      broker_port=broker.agent_port))
    procs.start("nginx", ["nginx", "-c", str(conf), "-p", str(tmp_path)])
    wait_until(lambda: port_open(nginx_port), 10, "nginx to listen")
    url = f"wss://localhost:{nginx_port}/agent"

    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("behind-nginx")
    procs.start("agent", [str(BIN / "batchtunnel"), "agent", "--url", url, "--cafile", pki.ca],
                env={"BATCHTUNNEL_TOKEN": tunnel["token"]})
    wait_until(lambda: broker.agent_connected(tunnel["id"]), 15, "the agent to connect through nginx")
    port = broker.client.expose(tunnel["id"], 0, target_port)["port"]
    expected, got, size = await client.download(port, 32 * 1024 * 1024)
    assert got == expected and size == 32 * 1024 * 1024
    # The broker saw the agent's address through the proxy, not only the proxy's.
    assert "agent connected from 127.0.0.1 (via 127.0.0.1:" in broker.proc.log()

    # Failures are counted per agent address (from X-Forwarded-For), so the back-off blocks the
    # offender, not the proxy and everyone behind it.
    for _ in range(2):
        with pytest.raises(Refused) as refused:
            await HostileAgent.open(url, tunnel["id"] + ".wrong", pki.ca, source="127.0.0.50")
        assert refused.value.status == 401
    with pytest.raises(Refused) as refused:
        await HostileAgent.open(url, tunnel["token"], pki.ca, source="127.0.0.50")
    assert refused.value.status == 429
    other = await HostileAgent.open(url, tunnel["token"], pki.ca, source="127.0.0.51")
    assert await other.alive()
    await other.close()
    assert "127.0.0.50 is refused for 1 s" in broker.proc.log()
