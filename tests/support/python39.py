"""Debian 11's python3.9 and websockets 15.0.1 (scripts/python39.sh), and the agent zipapp built for them."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from .processes import BIN

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def python39() -> tuple[str, str]:
    """(python3.9, a directory holding websockets 15.0.1)."""
    done = subprocess.run([str(ROOT / "scripts" / "python39.sh")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    found = dict(line.split("=", 1) for line in done.stdout.split())
    return found["PYTHON39"], found["WEBSOCKETS39"]


def build_pyz(output: Path, *options: str) -> str:
    """``batchtunnel agent-pyz --output OUTPUT OPTIONS...``; returns what it printed."""
    done = subprocess.run([str(BIN / "batchtunnel"), "agent-pyz", "--output", str(output), *options],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout
