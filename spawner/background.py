"""Background commands of a spawner (the connect-to-job step), each in its own process group.

A command is started with ``start_new_session``, so it and everything it
starts (an ``ssh -L``, a forwarder that double-forks) share one process group,
and ``terminate()`` signals the whole group: nothing is left holding a port.
The group survives the hub's own death on purpose; after a restart the
spawner ``adopt()``s it again from the PID it kept in its state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
from collections.abc import Mapping

log = logging.getLogger(__name__)

OUTPUT_LINES = 20
"""The last lines of a command's output that are kept (for the reason its end gives)."""
LINE_LIMIT = 64 * 1024
"""Bytes of one output line kept at most."""
READ_SIZE = 64 * 1024
OUTPUT_WAIT = 1.0
"""Seconds an ended command's output may take to reach its end (exit_reason)."""


class BackgroundCommand:
    """One shell command running in the background, watched.

    Args:
        command: the shell command line (already rendered).
        env: its environment.
        name: for log lines (never contains secrets).
    """

    def __init__(self, command: str, env: Mapping[str, str] | None = None, name: str = "background command") -> None:
        self.command = command
        self.env = dict(env) if env is not None else None
        self.name = name
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        self._adopted_exit: int | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_shell(
            self.command, env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self._proc.pid
        # Owned by this object: awaited in terminate() or wait().
        self._reader = asyncio.ensure_future(self._read_output())

    @classmethod
    def adopt(cls, pid: int, command: str, name: str = "background command") -> BackgroundCommand:
        """Watch a process group started by an earlier hub process (already exited if it is gone)."""
        adopted = cls(command, name=name)
        adopted.pid = pid
        return adopted

    async def _read_output(self) -> None:
        """Keep the last lines; read to the end, so the command never blocks on a full pipe. A line
        over LINE_LIMIT is not kept (nor held in memory): a note stands in for it."""
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        pending = b""
        dropping = False  # inside a line over the limit
        while chunk := await stream.read(READ_SIZE):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for raw in lines:
                if dropping:  # the end of the line over the limit, already noted
                    dropping = False
                else:
                    self._keep(raw)
            if len(pending) > LINE_LIMIT:
                if not dropping:
                    self._keep(pending)  # noted as over the limit
                dropping, pending = True, b""
        if pending and not dropping:
            self._keep(pending)

    def _keep(self, raw: bytes) -> None:
        if len(raw) > LINE_LIMIT:
            self.output.append(f"[a line over {LINE_LIMIT // 1024} KiB, not kept]")
            return
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            self.output.append(line)

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal); None while it runs."""
        if self._proc is not None:
            return self._proc.returncode
        if self.pid is not None and self._adopted_exit is None and not _alive(self.pid):
            self._adopted_exit = -1  # not our child: the status is unknowable
        return self._adopted_exit

    def exited(self) -> bool:
        return self.returncode is not None

    def describe_exit(self) -> str:
        """What to tell an admin and the user when the command ended."""
        code = self.returncode
        if code is None:
            return f"{self.name} is running"
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        if self._proc is None:
            how = "ended (it was started by an earlier hub process)"
        tail = "; ".join(list(self.output)[-3:])
        return f"{self.name} {how}" + (f": {tail}" if tail else "")

    async def exit_reason(self, output_timeout: float = OUTPUT_WAIT) -> str:
        """``describe_exit()`` once the ended command's output is read: its exit can be seen before
        the last lines reach us. At most ``output_timeout`` seconds, since a process it left in the
        background may hold its output open."""
        if self._reader is not None and self.exited():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), output_timeout)
        return self.describe_exit()

    async def wait(self) -> int:
        assert self._proc is not None
        code = await self._proc.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def terminate(self, timeout: float = 5.0) -> None:
        """SIGTERM the whole process group, SIGKILL it after ``timeout``; idempotent."""
        if self.pid is None:
            return
        _signal_group(self.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Polling /proc: processes of the group that are not our children give no event to wait on.
        while _group_alive(self.pid) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if _group_alive(self.pid):
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing its group", self.name, self.pid, timeout)
            _signal_group(self.pid, signal.SIGKILL)
        if self._proc is not None:
            await self._proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process remains in group ``pgid``."""
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - not Linux
        return _alive(pgid)
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
