"""Driving Debian's chromium with Playwright: launch arguments, screenshots, waiting inside the page."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", "--disable-component-update",
                 "--disable-sync"]


def chromium() -> str | None:
    return shutil.which("chromium")


@contextlib.contextmanager
def chromium_browser(artifacts: Path) -> Iterator[Any]:
    """Debian's chromium under Playwright, closed at the end; when the block fails, each open page of
    the first context is saved as ``artifacts``/failure.png first."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            yield browser
        except BaseException:
            artifacts.mkdir(parents=True, exist_ok=True)
            for page in browser.contexts[0].pages if browser.contexts else []:
                page.screenshot(path=str(artifacts / "failure.png"))
            raise
        finally:
            browser.close()


class Shots:
    """Numbered screenshots into one folder: ``shots(page, "login")`` -> 01-login.png."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def __call__(self, page: Any, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"))


def log_in(page: Any, port: int, user: str, next_path: str = "",
           shot: Callable[[Any, str], None] | None = None) -> None:
    """Log ``user`` in on the hub at 127.0.0.1:``port`` (the tests' hubs take any password) and submit;
    ``next_path``: where the hub goes after; ``shot(page, "login")``, if given, sees the filled form."""
    page.goto(f"http://127.0.0.1:{port}/hub/login" + (f"?next={next_path}" if next_path else ""))
    page.fill("#username_input", user)
    page.fill("#password_input", "any-password")
    if shot is not None:
        shot(page, "login")
    page.click("#login_submit")


def watch_kernel_info_reply(page: Any) -> threading.Event:
    """An event set once a kernel WebSocket of ``page`` has received a kernel_info_reply.

    JupyterLab drops a cell run asked for before the notebook's kernel connection has had its
    kernel_info_reply (the run is cleared, the prompt stays "[ ]"), with or without the tunnel: seen
    in 3 of 12 runs straight after a notebook opened, and in 0 of 20 once the runs waited for that
    reply. The execution indicator says "idle" before then, so wait for the reply itself.
    """
    seen = threading.Event()

    def on_websocket(ws: Any) -> None:
        if "/channels" in ws.url:
            ws.on("framereceived", lambda payload: seen.set() if _is_kernel_info_reply(payload) else None)

    page.on("websocket", on_websocket)
    return seen


def _is_kernel_info_reply(payload: str | bytes) -> bool:
    raw = payload.encode() if isinstance(payload, str) else payload
    return b'"kernel_info_reply"' in raw


def wait_for(page: Any, condition: Any, timeout: float, what: str) -> None:
    """Wait for ``condition()`` while letting Playwright deliver its events (it does so only inside calls)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(50)


def open_notebook(page: Any, lab_url: str) -> None:
    """Open JupyterLab at ``lab_url`` (a server's /lab) with a clean workspace, start a notebook from
    the launcher, and wait until its kernel connection takes cells (see watch_kernel_info_reply)."""
    page.goto(f"{lab_url}?reset")
    launcher = page.locator('.jp-LauncherCard[data-category="Notebook"]:visible')
    launcher.first.wait_for(timeout=60_000)
    kernel_ready = watch_kernel_info_reply(page)
    launcher.first.click()
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=60_000)
    wait_for(page, kernel_ready.is_set, 60, "the notebook's kernel connection to be ready")


def run_cell(page: Any, code: str, expected: str, timeout: float = 30) -> None:
    """Type ``code`` into the notebook's last cell, run it, and wait for ``expected`` in its output."""
    from playwright.sync_api import expect

    editor = page.locator(".jp-Cell .cm-content").last
    editor.click()
    page.wait_for_selector(".cm-editor.cm-focused")
    page.keyboard.type(code)
    expect(editor).to_contain_text(code)
    page.keyboard.press("Shift+Enter")
    expect(page.locator(".jp-OutputArea-output").last).to_contain_text(expected, timeout=timeout * 1000)
