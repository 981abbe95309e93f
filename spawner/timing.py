"""How long a server's start took, phase by phase, in the hub's log at DEBUG.

One line per phase, each with the time since the spawn began (wall clock, so that it lines up with
the broker's and the job's logs) and since the phase before::

    Start of alice's server: job 42 submitted at +85 ms (+85 ms)
    Start of alice's server: job 42 running on node7 at +1204 ms (+1119 ms)
    Start of alice's server: notebook port 47123 reported at +3350 ms (+2146 ms)
    Start of alice's server: connect step ready at +3541 ms (+191 ms)
    Start of alice's server: started at +3542 ms (+1 ms)

bench/start_time.py reads these lines (docs/benchmarks.md, "Time to a usable notebook").
"""

from __future__ import annotations

import logging
import time


class StartTiming:
    """The phases of one start, logged as they pass (``mark``) or when learnt later (``mark_at``)."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[logging.Logger], what: str) -> None:
        self.log = log
        self.what = what
        self.began = self.last = time.time()

    def mark(self, phase: str) -> None:
        self.mark_at(phase, time.time())

    def mark_at(self, phase: str, when: float) -> None:
        """``phase`` happened at ``when`` (seconds since the epoch), e.g. as another process saw it."""
        self.log.debug("Start of %s: %s at +%.0f ms (+%.0f ms)", self.what, phase, (when - self.began) * 1000,
                       (when - self.last) * 1000)
        self.last = max(self.last, when)
