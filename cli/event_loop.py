"""Running a coroutine until SIGTERM/SIGINT, with uvloop when it is installed."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, T]], loop_kind: str = "auto") -> T:
    """Run ``main(stop)``; ``stop`` is set on SIGTERM or SIGINT.

    Args:
        loop_kind: "auto" (uvloop if importable), "uvloop" or "asyncio".
    """
    if loop_kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop_kind == "uvloop":
                raise
            log.warning("event loop: asyncio, because uvloop is not installed (pip install 'batchtunnel[fast]'); "
                        "asyncio's TLS costs each idle connection several times the memory (docs/benchmarks.md)")
        else:
            log.info("event loop: uvloop %s", getattr(uvloop, "__version__", "?"))
            return uvloop.run(_with_signals(main))
    else:
        log.info("event loop: asyncio (--event-loop asyncio)")
    return asyncio.run(_with_signals(main))


async def _with_signals(main: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await main(stop)
