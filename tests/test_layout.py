"""scripts/check_imports.py: the tree has no import cycle and keeps its layers; the check finds both
kinds of fault when they are there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_imports.py"


def run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, timeout=60)


def test_the_tree_passes() -> None:
    result = run(ROOT)
    assert result.returncode == 0, result.stdout


def test_a_cycle_and_a_broken_layer_are_found(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "wire/__init__.py": "",
        "wire/a.py": "from .b import B\nA = 1\n",
        "wire/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nB = 2\n",
        "wire/c.py": "from ..session import Thing\nimport aiohttp\n",
        "session/__init__.py": "Thing = 3\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    result = run(tmp_path)
    assert result.returncode == 1
    assert "import cycle: batchtunnel.wire.a -> batchtunnel.wire.b -> batchtunnel.wire.a" in result.stdout
    assert "wire/c.py:1: wire may not import session" in result.stdout
    assert "wire/c.py:2: wire may not import aiohttp" in result.stdout


def test_each_side_loads_only_what_it_needs() -> None:
    """The agent runs in batch jobs (websockets only); the hub side reaches the broker without loading
    its server. Checked on the modules a fresh interpreter holds after the imports."""
    probe = (
        "import sys, batchtunnel.agent, batchtunnel.client, batchtunnel.cli.main\n"
        "agent_side = sorted(m for m in ('aiohttp', 'cryptography', 'jupyterhub', 'batchtunnel.broker') "
        "if m in sys.modules)\n"
        "import batchtunnel.spawner\n"
        "print(agent_side, 'batchtunnel.broker' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[] False"
