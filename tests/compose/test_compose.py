"""The compose demo (docker-compose.yml), built and run for real, driven by Chromium.

Runs with docker-compose against podman's Docker-compatible socket (scripts/containers.sh; there is no
Docker engine here). Builds the images (cached between runs by the engine), brings the stack up under
its own project name and port, then: the login page's news and users; log in, choose options, watch
the progress, JupyterLab; a cell runs on a compute node through proxy -> broker -> agent; nothing can
open a connection to a node (from the proxy, the hub, the broker, slurmctld), while the node itself
can; the hub container restarted: the open kernel WebSocket carries on; the broker container killed
and started: the agent comes back by itself and the notebook works again; the server stopped: job and
tunnel gone. Everything is torn down (containers, networks, volumes) even when the test fails.
Screenshots: artifacts/compose/; timings: artifacts/compose/timings.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import Shots, chromium, chromium_browser, open_notebook, run_cell, wait_for
from tests.support.hub import ROOT
from tests.support.processes import free_port, wait_until

pytestmark = [
    pytest.mark.compose,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.geteuid() != 0, reason="podman as root (scripts/containers.sh)"),
    pytest.mark.skipif(not chromium(), reason="needs Debian's chromium (scripts/test.sh installs it)"),
]

ARTIFACTS = ROOT / "artifacts" / "compose"
PROJECT = "btcompose"
NODES = ("node1", "node2")
# Outside the notebook's ports and slurmd's: a listener a job opens on every address of its node.
PROBE_PORT = 9999


@dataclass
class Stack:
    env: dict[str, str]
    port: int
    timings: dict[str, Any] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        done = subprocess.run(["docker-compose", "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args],
                              cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}: exit {done.returncode}\n{done.stdout[-3000:]}"
                                 f"\n{done.stderr[-3000:]}")
        return done.stdout

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).split()
        assert len(ids) == 1, f"{service}: {ids}"
        return ids[0]

    def exec(self, service: str, *argv: str, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["podman", "exec", self.container(service), *argv], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{service}: {argv}: exit {done.returncode}: {done.stderr[-2000:]}")
        return done

    def can_connect(self, service: str, host: str, port: int) -> bool:
        """Whether a TCP connection from ``service``'s container to host:port is accepted (3 s)."""
        code = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
                "except OSError as e:\n    print(e)\n    sys.exit(1)")
        return self.exec(service, "python3", "-c", code, host, str(port), check=False, timeout=30).returncode == 0

    def address(self, service: str, network: str) -> str:
        out = subprocess.run(["podman", "inspect", self.container(service)], env=self.env, capture_output=True,
                             text=True, check=True).stdout
        return str(json.loads(out)[0]["NetworkSettings"]["Networks"][f"{PROJECT}_{network}"]["IPAddress"])

    def broker_tunnels(self) -> list[dict[str, Any]]:
        code = ("import json\nfrom batchtunnel.client import BrokerClient\n"
                "token = open('/secrets/admin.token').read().strip()\n"
                "print(json.dumps(BrokerClient('http://broker:8766', token).tunnels()))")
        result: list[dict[str, Any]] = json.loads(self.exec("hub", "/opt/hub/bin/python3", "-c", code).stdout)
        return result

    def squeue(self) -> str:
        return self.exec("slurmctld", "squeue", "-h", "-o", "%i %u %T %N").stdout.strip()

    def tear_down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False, timeout=300)
        for kind in ("network", "volume"):  # what a half-finished run may have left behind
            names = subprocess.run(["podman", kind, "ls", "-q"], env=self.env, capture_output=True, text=True).stdout
            stale = [n for n in names.split() if n.startswith(f"{PROJECT}_")]
            if stale:
                subprocess.run(["podman", kind, "rm", "-f", *stale], env=self.env, capture_output=True)


def container_env() -> dict[str, str]:
    out = subprocess.run([str(ROOT / "scripts" / "containers.sh"), "up"], capture_output=True, text=True,
                         timeout=1200)
    assert out.returncode == 0, out.stderr
    env = dict(os.environ)
    for name, value in re.findall(r"(\w+)=([^;\s]+);", out.stdout):
        env[name] = value
    # This machine's egress inspects TLS: trust its CA inside the builds, as a site behind such a proxy would.
    extra = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    env["EXTRA_CA_CERTS"] = "".join(p.read_text() for p in extra)
    return env


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = container_env()
    port = free_port()
    env["BATCHTUNNEL_DEMO_PORT"] = str(port)
    s = Stack(env, port)
    s.tear_down()
    try:
        images = subprocess.run(["podman", "images", "-q", "batchtunnel-demo-node"], env=env, capture_output=True,
                                text=True).stdout.strip()
        started = time.monotonic()
        s.compose("build", timeout=1800)
        s.timings["build_s"] = round(time.monotonic() - started, 1)
        s.timings["build_was"] = "warm (images cached)" if images else "cold (no image)"
        started = time.monotonic()
        s.compose("up", "-d")
        wait_until(lambda: _hub_answers(port), 120, "the hub to answer through the proxy")
        wait_until(lambda: s.exec("slurmctld", "sinfo", "-h", "-o", "%t").stdout.split() == ["idle"], 120,
                   "both nodes to be idle in Slurm")
        s.timings["up_to_ready_s"] = round(time.monotonic() - started, 1)
        yield s
    finally:
        (ARTIFACTS / "timings.json").write_text(json.dumps(s.timings, indent=2) + "\n")
        (ARTIFACTS / "logs.txt").write_text(s.compose("logs", "--no-color", check=False, timeout=120)[-400_000:])
        s.tear_down()
        left = subprocess.run(["podman", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                              env=env, capture_output=True, text=True).stdout.split()
        assert not left, f"containers left behind: {left}"


def _hub_answers(port: int) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hub/api/", timeout=2) as resp:
        return resp.status == 200


def test_the_compose_demo_end_to_end(stack: Stack) -> None:
    from playwright.sync_api import expect

    base = f"http://127.0.0.1:{stack.port}"
    password = stack.exec("hub", "cat", "/secrets/password").stdout.strip()
    admin_password = stack.exec("hub", "cat", "/secrets/admin-password").stdout.strip()
    shot = Shots(ARTIFACTS)
    with chromium_browser(ARTIFACTS) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(30_000)
        sockets: list[Any] = []
        page.on("websocket", lambda ws: sockets.append(ws) if "/channels" in ws.url else None)

        # The login page: the site's news (docker/hub/templates/login.html) and the demo users.
        page.goto(f"{base}/hub/login")
        expect(page.locator("#site-news")).to_contain_text("news and known issues")
        expect(page.locator("#demo-users")).to_contain_text("demo1, demo2")
        page.fill("#username_input", "demo2")
        page.fill("#password_input", password)
        shot(page, "login")
        page.click("#login_submit")

        page.wait_for_selector("#bt-cores")
        page.fill("#bt-cores", "1")
        page.fill("#bt-memory_gb", "1")
        page.fill("#bt-runtime_minutes", "30")
        shot(page, "options")
        spawned = time.monotonic()
        page.click("form#spawn_form button[type=submit], form#spawn_form input[type=submit]")
        expect(page.locator("#progress-log")).to_contain_text(re.compile(r"running on node[12]"),
                                                              timeout=180_000)
        shot(page, "progress")
        page.wait_for_selector("#jp-main-dock-panel", timeout=180_000)
        stack.timings["spawn_to_jupyterlab_s"] = round(time.monotonic() - spawned, 1)
        shot(page, "jupyterlab")

        open_notebook(page, f"{base}/user/demo2/lab")
        # The kernel runs on a compute node, as the user; it opens a listener on all the node's
        # addresses, as any notebook server or tool a user starts there could.
        run_cell(page, "import getpass, socket, threading, socketserver; srv = socketserver.TCPServer(('0.0.0.0', "
                 f"{PROBE_PORT}), socketserver.BaseRequestHandler); threading.Thread(target=srv.serve_forever, "
                 "daemon=True).start(); print('on', socket.gethostname(), 'as', getpass.getuser())",
                 "as demo2")
        output = page.locator(".jp-OutputArea-output").last.inner_text()
        node = re.search(r"on (node[12])", output).group(1)  # type: ignore[union-attr]
        shot(page, "cell-on-node")

        # Nothing opens a connection to the node: not the proxy or the hub (not on the cluster's
        # network), not the broker or slurmctld (on it, but the node's firewall drops them). The
        # node itself reaches the listener (it is there), and slurmctld reaches slurmd (allowed).
        node_ip = stack.address(node, "cluster")
        assert stack.can_connect(node, node_ip, PROBE_PORT)
        assert stack.can_connect("slurmctld", node_ip, 6818)
        for service in ("proxy", "hub", "broker", "slurmctld"):
            assert not stack.can_connect(service, node_ip, PROBE_PORT), f"{service} reached {node}"
        for service in ("proxy", "hub", "broker"):
            assert not stack.can_connect(service, node_ip, 6818), f"{service} reached {node}'s slurmd"

        # The hub container restarted: the proxy and the broker carry the open kernel WebSocket.
        kernel_ws = sockets[-1]
        opened = len(sockets)
        stack.compose("restart", "hub")
        wait_until(lambda: _hub_answers(stack.port), 120, "the restarted hub to answer")
        run_cell(page, "print(6 * 7, 'after the hub restart')", "42 after the hub restart")
        assert not kernel_ws.is_closed() and len(sockets) == opened, "the kernel WebSocket was reopened"
        shot(page, "after-hub-restart")
        # The restarted hub starts the connect step again (same port, the agent still connected).
        wait_until(lambda: "starting the command again on hub-side port" in
                   stack.compose("logs", "--no-color", "hub"), 90, "the new hub to start the connect step again")

        # The broker container killed and started again: the agent comes back by itself, the
        # exposure is restored from the broker's database, JupyterLab reconnects its kernel.
        (tunnel,) = stack.broker_tunnels()
        subprocess.run(["podman", "kill", stack.container("broker")], env=stack.env, check=True,
                       capture_output=True)
        stack.compose("start", "broker")
        wait_until(lambda: stack.broker_tunnels()[0]["agent"]["connected"], 90,
                   "the agent to reconnect to the restarted broker")
        assert stack.broker_tunnels()[0]["id"] == tunnel["id"]
        wait_for(page, lambda: page.request.get(f"{base}/user/demo2/api/status").ok, 60,
                 "the notebook server to answer through the proxy again")
        # While the broker was away, JupyterLab's requests failed and it offered to restart the
        # server ("Server unavailable or unreachable"): a user dismisses that and carries on.
        for button in page.locator(".jp-Dialog button", has_text="Dismiss").all():
            button.click()
        run_cell(page, "print(7 * 6, 'after the broker restart')", "42 after the broker restart", timeout=90)
        shot(page, "after-broker-restart")

        page.goto(f"{base}/hub/home")
        page.click("#stop")
        page.wait_for_selector("#start", timeout=120_000)
        shot(page, "stopped")

        # The admin logs in with the admin password (and only with it).
        admin = browser.new_context().new_page()
        for attempt, expected in ((password, "/hub/login"), (admin_password, "/hub/spawn")):
            admin.goto(f"{base}/hub/login")
            admin.fill("#username_input", "demo1")
            admin.fill("#password_input", attempt)
            admin.click("#login_submit")
            admin.wait_for_load_state()
            assert expected in admin.url, admin.url
        admin.close()
    wait_until(lambda: stack.squeue() == "", 60, "the job to leave the queue")
    wait_until(lambda: stack.broker_tunnels() == [], 60, "the tunnel to be deleted")
