"""A real browser (Debian's chromium, driven by Playwright) through the whole product, on real Slurm.

Log in, fill the options form, watch the progress page, reach JupyterLab, run a cell, read its output
from the page, stop the server from the hub's home page. Screenshots: artifacts/browser/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.browser import Shots, chromium_browser, log_in, open_notebook, run_cell
from tests.support.hub import ROOT, Hub, ensure_user
from tests.support.processes import wait_until
from tests.support.tunnel import BrokerProcess

from .conftest import REQUIREMENTS

pytestmark = [
    *REQUIREMENTS,
    pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (scripts/test.sh installs it)"),
]

ARTIFACTS = ROOT / "artifacts" / "browser"


def test_log_in_choose_options_run_a_cell_and_stop(stack: tuple[Hub, BrokerProcess], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    hub, broker = stack
    ensure_user("btbrowser")
    # A returning user's saved workspace reopens old tabs (and a kernel dialog): start clean.
    home = Path("/home/btbrowser")
    shutil.rmtree(home / ".jupyter" / "lab" / "workspaces", ignore_errors=True)
    for old in home.glob("Untitled*.ipynb"):
        old.unlink()
    shot = Shots(ARTIFACTS)

    with chromium_browser(ARTIFACTS) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(30_000)
        log_in(page, hub.port, "btbrowser", shot=shot)

        # The options form, with the admin's limits.
        page.wait_for_selector("#bt-cores")
        assert page.get_attribute("#bt-memory_gb", "max") == "2"
        page.fill("#bt-cores", "1")
        page.fill("#bt-memory_gb", "1")
        page.fill("#bt-runtime_minutes", "30")
        shot(page, "options")
        page.click("form#spawn_form button[type=submit], form#spawn_form input[type=submit]")

        # The progress page shows our messages, then JupyterLab opens through proxy -> broker -> agent.
        expect(page.locator("#progress-log")).to_contain_text("running on btnode1", timeout=90_000)
        shot(page, "progress")
        page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
        shot(page, "jupyterlab")
        open_notebook(page, f"http://127.0.0.1:{hub.port}/user/btbrowser/lab")
        run_cell(page, "print(sum(range(1, 101)))", "5050")
        shot(page, "cell-output")

        page.goto(f"http://127.0.0.1:{hub.port}/hub/home")
        page.click("#stop")
        page.wait_for_selector("#start", timeout=60_000)
        shot(page, "stopped")
    wait_until(lambda: broker.client.tunnels() == [], 30, "the tunnel to be deleted after the stop")
