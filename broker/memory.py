"""Give memory that sessions' handshakes and endings freed back to the operating system.

glibc keeps freed heap memory for reuse, and TLS sessions that end after large records leave it
fragmented: 2000 hostile sessions that each sent one 60 KB frame grew a broker by 11 MiB that no
Python object held (tracemalloc saw nothing), and ``malloc_trim(0)`` gave 10 MiB of it back. Session
starts leave the same kind of garbage (TLS and WebSocket handshakes): 200 idle agents on a fresh
broker cost 65-68 KiB each, 42-44 KiB after a trim. So the broker trims once shortly after sessions
start or end (at most once per ``delay``). Traffic leaves the same garbage with no session starting
or ending: 50 agents downloading at full speed for 3 minutes left a broker 19-35 MiB above where it
started once they were idle again, so it also trims every ``interval`` while anything moves (and once
after it stopped). Measured here, a trim that gave 116 MiB back took 18 ms, one with
nothing to give back under 1 ms. On a C library without
``malloc_trim`` (musl, macOS) this does nothing.

Idle agents cost resident memory too, and most of it was not Python's: uvloop's TLS layer allocates a
256 KiB read buffer per connection, and glibc, which maps large allocations apart only until the
first of them is freed (its threshold then rises), put these buffers in the heap, on pages earlier
allocations had already made resident. As mappings of their own only the pages TLS records were
written to count. So the mapping threshold is that buffer's size while the loop creates a
connection's TLS layer (``TlsBuffers``) and 4 MiB otherwise; the data path allocates as much per read,
and a threshold of 256 KiB for the whole process halved bulk throughput. A fixed threshold also stops
glibc raising the heap top it keeps (128 KiB by default): with 32 MiB and that, one stream moved 0.71
times as much (the heap shrinking and growing back at large frees, we think: not counted), and with
the heap top kept at 64 MiB the loss was gone, so that is set, and the Trimmer returns what is left
over. 1,000 idle agents on a fresh broker, three pairs
alternating: 54.0 (52.3-55.8) KiB per agent before, 42.2 (41.6-47.3) after; bulk throughput and CPU
per GiB the same within the spread (bench/ab.py, 5 rounds; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from typing import Any

M_MMAP_THRESHOLD = -3
"""mallopt's parameter for the size from which glibc maps an allocation apart (malloc.h)."""
TLS_READ_BUFFER = 256 * 1024
"""The read buffer uvloop's TLS layer allocates per connection (its SSL_READ_MAX_SIZE)."""


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (find_library runs ``ldconfig -p``)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        return ctypes.CDLL(library)
    except OSError:
        return None


def _libc_function(name: str) -> Any:
    """The C library's function ``name`` (a ctypes function), or None."""
    return getattr(_libc(), name, None)


def _load_malloc_trim() -> Callable[[int], int] | None:
    trim = _libc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


M_TRIM_THRESHOLD = -1
"""mallopt's parameter for how much free memory at the heap's top glibc keeps rather than returns."""
HIGH_THRESHOLD = 4 * 1024 * 1024
"""The mapping threshold outside connection set-ups."""
TRIM_THRESHOLD = 64 * 1024 * 1024
"""The heap top glibc keeps: a fixed mapping threshold also stops glibc raising this one by itself,
and at its default (128 KiB) bulk transfers lost 29 % of their throughput (see above). The Trimmer
returns what is left over."""


class TlsBuffers:
    """``before_tls()`` just before the event loop creates a connection's TLS layer: its read buffer
    gets a mapping of its own; the loop's next turn sets the threshold back to HIGH_THRESHOLD. Does
    nothing where the C library has no ``mallopt`` (musl ignores it, macOS lacks it)."""

    def __init__(self) -> None:
        self._mallopt = _libc_function("mallopt")
        if self._mallopt is not None:
            self._mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            self._mallopt.restype = ctypes.c_int
        self._restore: asyncio.Handle | None = None
        self._trim_set = False

    def before_tls(self) -> None:
        if self._mallopt is None:
            return
        if not self._trim_set:
            self._trim_set = True
            self._mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        self._mallopt(M_MMAP_THRESHOLD, TLS_READ_BUFFER)
        if self._restore is None:
            self._restore = asyncio.get_running_loop().call_soon(self._set_high)

    def _set_high(self) -> None:
        self._restore = None
        self._mallopt(M_MMAP_THRESHOLD, HIGH_THRESHOLD)


class Trimmer:
    """``soon()`` after a session started or ended; the trim runs once, ``delay`` seconds later.
    ``watch(activity)``: every ``interval`` seconds, trim if ``activity()`` (a count that grows with
    traffic and connections) changed since the last look."""

    def __init__(self, delay: float = 1.0, interval: float = 10.0) -> None:
        self.delay = delay
        self.interval = interval
        self.trims = 0
        self._trim = _load_malloc_trim()
        self._pending: asyncio.TimerHandle | None = None
        self._watching: asyncio.TimerHandle | None = None

    def watch(self, activity: Callable[[], int]) -> None:
        if self._trim is None:
            return
        seen = activity()

        def look() -> None:
            nonlocal seen
            now = activity()
            if now != seen:
                seen = now
                self._run()
            self._watching = loop.call_later(self.interval, look)

        loop = asyncio.get_running_loop()
        self._watching = loop.call_later(self.interval, look)

    def soon(self) -> None:
        if self._trim is None or self._pending is not None:
            return
        self._pending = asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._pending = None
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

    def cancel(self) -> None:
        for handle in (self._pending, self._watching):
            if handle is not None:
                handle.cancel()
        self._pending = self._watching = None
