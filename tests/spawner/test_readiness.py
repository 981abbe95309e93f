"""start() returns once the notebook answers HTTP, not merely once its port is known."""

from __future__ import annotations

import asyncio
import http.server
import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from .test_connect import Connecting


class Late:
    """An HTTP server on a reserved port that starts answering only when ``open()`` is called."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        self.port = self.sock.getsockname()[1]
        self.served = threading.Event()
        self.server: http.server.HTTPServer | None = None

    def open(self) -> None:
        served = self.served

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.set()
                self.send_response(302)
                self.send_header("Location", "/lab")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = self.sock
        self.sock.listen()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
        self.sock.close()


@pytest.fixture
def late() -> Iterator[Late]:
    server = Late()
    yield server
    server.close()


class Ready(Connecting):
    start_timeout = 60


async def test_start_returns_once_the_notebook_answers(late: Late, caplog: pytest.LogCaptureFixture) -> None:
    spawner = Ready(notebook_port=late.port, notebook_ready_timeout=30)
    spawner.log = logging.getLogger("test-readiness")
    starting = asyncio.ensure_future(spawner.start())
    # Refused for a while: start() keeps asking and does not return.
    await asyncio.sleep(0.3)
    assert not starting.done()
    late.open()
    with caplog.at_level(logging.DEBUG, logger="test-readiness"):
        assert await asyncio.wait_for(starting, 10) == ("127.0.0.1", late.port)
    assert late.served.is_set()  # it returned after an answer, not after a guess
    assert "notebook answers HTTP after" in caplog.text


async def test_a_notebook_that_never_answers_leaves_the_verdict_to_jupyterhub(
        late: Late, caplog: pytest.LogCaptureFixture) -> None:
    spawner = Ready(notebook_port=late.port, notebook_ready_timeout=0.3)
    spawner.log = logging.getLogger("test-readiness")
    with caplog.at_level(logging.INFO, logger="test-readiness"):
        assert await asyncio.wait_for(spawner.start(), 10) == ("127.0.0.1", late.port)
    assert "did not answer HTTP within" in caplog.text
    assert not late.served.is_set()


async def test_the_wait_stays_within_start_timeout(late: Late) -> None:
    spawner = Ready(notebook_port=late.port, notebook_ready_timeout=300)
    spawner.start_timeout = 2  # type: ignore[assignment]
    # Without the bound it would ask for 300 s; JupyterHub would have cancelled start() at 2 s.
    assert await asyncio.wait_for(spawner.start(), 10) == ("127.0.0.1", late.port)
