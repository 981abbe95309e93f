"""A real browser (Debian's chromium, driven by Playwright) through the whole product, on real Slurm.

Log in, fill the options form, watch the progress page, reach JupyterLab, run a cell, read its output
from the page, stop the server from the hub's home page. Screenshots: artifacts/browser/.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.support.hub import ROOT, Hub, ensure_user
from tests.support.processes import wait_until
from tests.support.tunnel import BrokerProcess

from .conftest import REQUIREMENTS

pytestmark = [
    *REQUIREMENTS,
    pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (scripts/test.sh installs it)"),
]

ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", "--disable-component-update",
                 "--disable-sync"]


def test_log_in_choose_options_run_a_cell_and_stop(stack: tuple[Hub, BrokerProcess], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    hub, broker = stack
    ensure_user("btbrowser")
    # A returning user's saved workspace reopens old tabs (and a kernel dialog): start clean.
    home = Path("/home/btbrowser")
    shutil.rmtree(home / ".jupyter" / "lab" / "workspaces", ignore_errors=True)
    for old in home.glob("Untitled*.ipynb"):
        old.unlink()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = iter(range(1, 100))

    def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
        page.screenshot(path=str(ARTIFACTS / f"{next(shots):02d}-{name}.png"))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(30_000)
            page.goto(f"http://127.0.0.1:{hub.port}/hub/login")
            page.fill("#username_input", "btbrowser")
            page.fill("#password_input", "any-password")
            shot(page, "login")
            page.click("#login_submit")

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
            page.goto(f"http://127.0.0.1:{hub.port}/user/btbrowser/lab?reset")
            page.wait_for_selector('.jp-LauncherCard[data-category="Notebook"]:visible', timeout=60_000)

            # JupyterLab drops a cell run asked for before the notebook's kernel connection has had
            # its kernel_info_reply (the run is cleared, the prompt stays "[ ]"), with or without the
            # tunnel: seen in 3 of 12 runs straight after a notebook opened, and in 0 of 20 once the
            # runs waited for that reply. The execution indicator says "idle" before then, so wait
            # for the reply itself on the kernel's WebSocket.
            kernel_ready = watch_kernel_info_reply(page)
            page.locator('.jp-LauncherCard[data-category="Notebook"]:visible').first.click()
            page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=60_000)
            wait_for(page, kernel_ready.is_set, 60, "the notebook's kernel connection to be ready")
            editor = page.locator(".jp-Cell .cm-content").first
            editor.click()
            page.wait_for_selector(".cm-editor.cm-focused")
            page.keyboard.type("print(sum(range(1, 101)))")
            expect(editor).to_contain_text("print(sum(range(1, 101)))")
            page.keyboard.press("Shift+Enter")
            expect(page.locator(".jp-OutputArea-output").first).to_contain_text("5050", timeout=30_000)
            shot(page, "cell-output")

            page.goto(f"http://127.0.0.1:{hub.port}/hub/home")
            page.click("#stop")
            page.wait_for_selector("#start", timeout=60_000)
            shot(page, "stopped")
        except BaseException:
            for open_page in browser.contexts[0].pages if browser.contexts else []:
                open_page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise
        finally:
            browser.close()
    wait_until(lambda: broker.client.tunnels() == [], 30, "the tunnel to be deleted after the stop")


def watch_kernel_info_reply(page):  # type: ignore[no-untyped-def]
    """An event set once a kernel WebSocket of ``page`` has received a kernel_info_reply."""
    seen = threading.Event()

    def on_websocket(ws):  # type: ignore[no-untyped-def]
        if "/channels" in ws.url:
            ws.on("framereceived", lambda payload: seen.set() if _is_kernel_info_reply(payload) else None)

    page.on("websocket", on_websocket)
    return seen


def _is_kernel_info_reply(payload: str | bytes) -> bool:
    raw = payload.encode() if isinstance(payload, str) else payload
    return b'"kernel_info_reply"' in raw


def wait_for(page, condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Wait for ``condition`` while letting Playwright deliver its events (it does so only inside calls)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(50)
