"""Give memory that sessions' handshakes and endings freed back to the operating system.

glibc keeps freed heap memory for reuse, and TLS sessions that end after large records leave it
fragmented: 2000 hostile sessions that each sent one 60 KB frame grew a broker by 11 MiB that no
Python object held (tracemalloc saw nothing), and ``malloc_trim(0)`` gave 10 MiB of it back. Session
starts leave the same kind of garbage (TLS and WebSocket handshakes): 200 idle agents on a fresh
broker cost 65-68 KiB each, 42-44 KiB after a trim. So the broker trims once shortly after sessions
start or end (at most once per ``delay``). On a C library without ``malloc_trim`` (musl, macOS) this
does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class Trimmer:
    """``soon()`` after a session started or ended; the trim runs once, ``delay`` seconds later."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self._trim = _load_malloc_trim()
        self._pending: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self._trim is None or self._pending is not None:
            return
        self._pending = asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._pending = None
        if self._trim is not None:
            self._trim(0)

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
