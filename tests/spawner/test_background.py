"""Background commands with real processes: exit detection, whole-group termination, adoption."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from batchtunnel.spawner.background import BackgroundCommand, _group_alive


async def _until(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_exit_is_detected_with_status_and_output() -> None:
    cmd = BackgroundCommand("echo cannot bind port 8000 >&2; exit 3", name="forwarder")
    await cmd.start()
    await _until(cmd.exited)
    await cmd.wait()
    assert cmd.returncode == 3
    assert cmd.describe_exit() == "forwarder exited with status 3: cannot bind port 8000"


async def test_the_reason_waits_for_output_the_exit_outran() -> None:
    # The shell exits at once; a line its background child writes later still reaches the reason.
    cmd = BackgroundCommand("(sleep 0.3; echo address in use) & echo starting; exit 5", name="forwarder")
    await cmd.start()
    await _until(cmd.exited)
    assert await cmd.exit_reason() == "forwarder exited with status 5: starting; address in use"
    await cmd.terminate()


async def test_the_reason_does_not_wait_for_output_a_background_child_holds_open() -> None:
    cmd = BackgroundCommand("sleep 30 & echo starting; exit 5", name="forwarder")
    await cmd.start()
    await _until(cmd.exited)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await cmd.exit_reason(output_timeout=0.5) == "forwarder exited with status 5: starting"
    assert loop.time() - began < 5  # bounded by output_timeout, not by the sleep
    await cmd.terminate()
    assert not _group_alive(cmd.pid or 0)


async def test_a_line_over_the_limit_is_dropped_and_reading_goes_on() -> None:
    # asyncio's readline() refuses lines over 64 KiB. Reading must go on, or the command would block
    # on a full pipe and its later lines would be lost; and the line is not held in memory.
    for size in (70_000, 1_000_000):  # within one read of the pipe, and over several
        cmd = BackgroundCommand(f"head -c {size} /dev/zero | tr '\\0' x; echo; echo bind failed; exit 2",
                                name="forwarder")
        await cmd.start()
        await asyncio.wait_for(cmd.wait(), 10)
        assert await cmd.exit_reason() == \
            "forwarder exited with status 2: [a line over 64 KiB, not kept]; bind failed"


async def test_terminate_kills_the_whole_group_including_grandchildren(tmp_path: Path) -> None:
    # The shell starts a background grandchild (like ssh -f or a forwarder that daemonizes).
    pidfile = tmp_path / "grandchild"
    cmd = BackgroundCommand(f"sleep 300 & echo $! > {pidfile}; wait")
    await cmd.start()
    await _until(pidfile.exists)
    grandchild = int(pidfile.read_text())
    assert cmd.pid is not None and os.getpgid(grandchild) == cmd.pid
    await cmd.terminate(timeout=5)
    assert not _group_alive(cmd.pid)
    assert cmd.exited()


async def test_sigterm_ignoring_group_is_killed_after_timeout() -> None:
    cmd = BackgroundCommand("trap '' TERM; sleep 300 & trap '' TERM; wait")
    await cmd.start()
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await cmd.terminate(timeout=0.5)
    assert cmd.pid is not None and not _group_alive(cmd.pid)
    assert loop.time() - started < 10


async def test_adopted_command_is_watched_and_terminated_by_pid() -> None:
    # Started "by an earlier hub": a separate session we only know the PID of.
    proc = await asyncio.create_subprocess_exec("sleep", "300", start_new_session=True)
    adopted = BackgroundCommand.adopt(proc.pid, "sleep 300", name="connect-to-job command")
    assert not adopted.exited()
    await adopted.terminate(timeout=5)
    await proc.wait()
    assert adopted.exited()
    assert "earlier hub process" in adopted.describe_exit()


async def test_adopting_a_vanished_process_reports_it_exited() -> None:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    assert BackgroundCommand.adopt(proc.pid, "true").exited()
