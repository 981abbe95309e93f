"""The end of a failed job's output goes into the spawn error, read by a hub that is often root: only
from a regular file that the job's user owns, never through a link the user made."""

from __future__ import annotations

import os
from pathlib import Path

from batchtunnel.spawner.spawners import _tail


def test_the_last_lines_of_the_users_own_file(tmp_path: Path) -> None:
    out = tmp_path / "job.log"
    out.write_text("starting\n" + "x\n" * 5000 + "module python/9 not found\nexit 3\n")
    assert _tail(str(out), os.getuid()) == "x | module python/9 not found | exit 3"


def test_nothing_through_a_link_or_from_someone_elses_file(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret\n")
    link = tmp_path / "job.log"
    link.symlink_to(secret)
    assert _tail(str(link), os.getuid()) == ""  # a symbolic link the user made
    assert _tail(str(secret), os.getuid() + 1) == ""  # a file (or hard link) the user does not own
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _tail(str(fifo), os.getuid()) == ""  # not a regular file, and no hang
    assert _tail(str(tmp_path / "missing"), os.getuid()) == ""
    assert _tail(str(secret), None) == ""  # no such user
