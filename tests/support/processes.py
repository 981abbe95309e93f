"""Start real processes for tests, wait for conditions, and always tear them down by PID."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


# Ports for the servers tests start, below Linux's ephemeral range (32768-60999 by default): a port the
# kernel hands out for port 0 may be taken by any outgoing connection between our check and the server's
# bind (CI once saw the broker fail so). Ports here are handed out in turn, so two calls never collide.
_PORTS = range(20000, 32768)
_next_port = os.getpid() % len(_PORTS)


def free_port() -> int:
    """A loopback TCP port nothing listens on now, outside the ephemeral range; each call a new one."""
    global _next_port
    for _ in range(len(_PORTS)):
        port = _PORTS[_next_port]
        _next_port = (_next_port + 1) % len(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except Exception as exc:  # the condition may not be checkable yet (e.g. connection refused)
            result, last = None, exc
        else:
            last = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" ({last!r})" if last else ""))
        time.sleep(interval)


async def eventually(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> None:
    """``wait_until`` for async tests: wait without blocking the event loop until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def eventually_threaded(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """``eventually`` for a predicate that blocks (an API call, a log read): it runs in a thread, so the
    test's event loop (a relay, in-process agents) keeps running; exceptions count as "not yet"."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            if await asyncio.to_thread(predicate):
                return
        except Exception:
            pass
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """A child process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        full_env = {**os.environ, **(env or {})}
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                      cwd=cwd, start_new_session=True)
        self.pid = self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill9(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def wait_ready(self, ready: Callable[[], Any], timeout: float, what: str) -> None:
        """``wait_until(ready)``, failing at once, with the end of the log, if the process exits first (a
        server whose port was taken meanwhile, a bad option)."""
        wait_until(lambda: not self.alive() or ready(), timeout, what)
        if not self.alive():
            raise AssertionError(f"{self.name} exited with status {self.popen.returncode} while waiting for "
                                 f"{what}:\n{self.log()[-2000:]}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left."""
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


class ProcessGroup:
    """Processes started by one test or fixture; ``stop_all()`` in teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        self.cleanups: list[Callable[[], None]] = []

    def start(self, name: str, argv: list[str], **kwargs: Any) -> Proc:
        proc = Proc(name, argv, self.log_dir, **kwargs)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # keep tearing down the rest
                print(f"cleanup {cleanup} failed: {exc!r}")
        for proc in reversed(self.procs):
            proc.stop()


def reset_connections(host: str, port: int, netns: str | None = None) -> int:
    """Destroy the established TCP connections to ``host:port`` made from this namespace (or ``netns``),
    with ``ss -K`` (root): the far end gets a reset, as when a proxy or NAT kills them. Returns how many."""
    argv = ["ss", "-K", "-t", "state", "established", "dst", host, "dport", "=", str(port)]
    if netns is not None:
        argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.strip() and not line.startswith(("Netid", "Recv-Q")))


def tcp_nodelay(pid: int) -> list[tuple[tuple[str, int], tuple[str, int], bool]]:
    """Each connected TCP socket of process ``pid``: (local address, peer address, TCP_NODELAY set).

    Read from a duplicate of each descriptor (pidfd_getfd, Linux 5.6; root may take any process's)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd_getfd = 438  # the system call's number on x86_64 and aarch64 alike
    found = []
    pidfd = os.pidfd_open(pid)
    try:
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            if not os.readlink(entry).startswith("socket:"):
                continue
            fd = libc.syscall(pidfd_getfd, pidfd, int(entry.name), 0)
            if fd < 0:
                continue  # closed meanwhile
            sock = socket.socket(fileno=fd)
            try:
                if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                    try:
                        peer = sock.getpeername()
                    except OSError:  # a listening socket
                        continue
                    nodelay = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                    found.append((sock.getsockname()[:2], peer[:2], nodelay))
            finally:
                sock.close()  # the duplicate only
    finally:
        os.close(pidfd)
    return found
