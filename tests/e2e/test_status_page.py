"""The admin status page (batchtunnel.status), a JupyterHub service started by the hub, in Chromium:
an admin finds it in the Services menu and sees a running notebook's tunnel, with its job and node;
a user who is not an admin gets 403. Screenshots: artifacts/browser/status-*.png."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import chromium_browser, log_in
from tests.support.hub import Hub, ensure_user
from tests.support.processes import ProcessGroup, free_port
from tests.support.tunnel import BrokerProcess, Pki

from .conftest import HUB_SIDE, REQUIREMENTS, empty_queue
from .test_browser import ARTIFACTS
from .test_slurm import spawn

pytestmark = [
    *REQUIREMENTS,
    pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (scripts/test.sh installs it)"),
]


@pytest.fixture
def status_stack(slurm: str, procs: ProcessGroup, pki: Pki, tmp_path: Path) -> Iterator[tuple[Hub, BrokerProcess]]:
    empty_queue()
    broker = BrokerProcess(procs, pki, tmp_path / "broker", listen_host=HUB_SIDE, public_host=HUB_SIDE)
    token_file = tmp_path / "hub" / "admin.token"  # Hub writes the broker's admin token there
    hub = Hub(procs, tmp_path / "hub", broker, backend="real-slurm", hub_ip=HUB_SIDE, options_memory_max_gb=2,
              external_proxy=True, hub_config=(
                  "from batchtunnel.status import status_service",
                  f"service, role = status_service(broker_api_url={broker.api_url!r}, "
                  f"broker_admin_token_file={str(token_file)!r}, port={free_port()})",
                  "c.JupyterHub.services.append(service)",
                  "c.JupyterHub.load_roles.append(role)",
                  "c.Authenticator.admin_users = {'btadmin'}",
              ))
    yield hub, broker
    hub.api("DELETE", "/hub/api/users/btslurm2/server")
    subprocess.run(["scancel", "--partition=debug"], capture_output=True)
    empty_queue()


def test_admins_see_every_tunnel_and_others_are_refused(status_stack: tuple[Hub, BrokerProcess]) -> None:
    from playwright.sync_api import expect

    hub, broker = status_stack
    for user in ("btadmin", "btslurm2"):
        ensure_user(user)
    assert spawn(hub, "btslurm2")[-1].get("ready")
    (tunnel,) = broker.client.tunnels()
    job = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_browser(ARTIFACTS) as browser:
        admin = browser.new_context(viewport={"width": 1400, "height": 700}).new_page()
        admin.set_default_timeout(30_000)
        log_in_and_wait(admin, hub, "btadmin")
        # The hub's Services menu links the page for an admin.
        link = admin.locator('a[href*="/services/batchtunnel-status"]')
        expect(link.first).to_be_attached()
        admin.goto(f"http://127.0.0.1:{hub.port}/services/batchtunnel-status/")
        row = admin.locator(f'#tunnels tr[data-tunnel="{tunnel["id"]}"]')
        expect(row).to_contain_text("btslurm2")
        expect(row).to_contain_text(job)
        expect(row).to_contain_text("connected")
        expect(row).to_contain_text("10.213.7.2")  # the node, where the agent dialled from
        admin.screenshot(path=str(ARTIFACTS / "status-admin.png"))

        other = browser.new_context(viewport={"width": 1400, "height": 700}).new_page()
        other.set_default_timeout(30_000)
        log_in_and_wait(other, hub, "btslurm2")
        response = other.goto(f"http://127.0.0.1:{hub.port}/services/batchtunnel-status/")
        assert response is not None and response.status == 403
        other.screenshot(path=str(ARTIFACTS / "status-not-admin.png"))


def log_in_and_wait(page, hub: Hub, user: str) -> None:  # type: ignore[no-untyped-def]
    log_in(page, hub.port, user)
    page.wait_for_url(lambda url: "/hub/login" not in url)  # the home page, or a running server
