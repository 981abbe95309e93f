"""``batchtunnel agent-pyz``: the agent as one file, for job environments with no batchtunnel and no pip.

The file is a zipapp (PEP 441): this installation's agent modules (``wire``, ``session``, ``agent``,
``cli``, the certificate-pin helper) and the pure-Python part of ``websockets`` (its optional C
speed-up is left out, so one file serves every platform), run by the node's own ``python3``. The
oldest Python it runs on is the newer of the agent's own floor (3.9) and the bundled websockets'
``Requires-Python``; the file checks it at start and says so.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .. import __version__
from .options import Option

NAME = "agent-pyz"
HELP = "build batchtunnel-agent.pyz: the agent as one file for a node's own python3 (no pip install)"
DESCRIPTION = """\
Write the agent as one executable file (a zipapp) that a compute node runs with
its own python3, for job environments where batchtunnel is not installed:

  python3 batchtunnel-agent.pyz --url wss://hub.example.org:8765/agent -- COMMAND

Put it on a filesystem the nodes share and set the spawner's agent_zipapp to its
path, or let the spawner inline it into each batch script (agent_zipapp_inline).
It bundles websockets from this environment, or from --websockets DIR (a
directory holding a websockets package, e.g. made by `pip install --target DIR
websockets==15.0.1`) when the nodes' Python is older than this environment's
websockets supports.
"""

OPTIONS = [
    Option("output", "file to write", str, "batchtunnel-agent.pyz", metavar="FILE"),
    Option("websockets", "directory holding the websockets package to bundle (default: the one this Python "
           "imports)", metavar="DIR"),
    Option("interpreter", "the file's #! line: the Python that runs it when executed directly",
           str, "/usr/bin/env python3", metavar="COMMAND"),
]


def run(values: dict[str, Any], args: argparse.Namespace) -> int:
    from pathlib import Path

    from .agent_pyz import build  # its imports are for this command only

    floor, websockets_version = build(Path(values["output"]), values["websockets"], values["interpreter"])
    print(f"wrote {values['output']}: batchtunnel {__version__} agent with websockets {websockets_version}, "
          f"for Python {'.'.join(map(str, floor))} or newer ({os.path.getsize(values['output'])} bytes)")
    return 0


