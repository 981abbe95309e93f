"""How the agent gets into the batch job: its command line, its environment, and, for job environments
without batchtunnel, the one-file agent (``batchtunnel agent-pyz``) on a shared path or inlined into
the batch script."""

from __future__ import annotations

import base64
import io
import re
import shlex
import zipfile
from typing import Any
from urllib.parse import urlsplit

from traitlets import Bool, List, TraitError, Unicode, validate
from traitlets.config import Configurable

from ..wire import ConfigurationError

INLINE_VARIABLE = "BATCHTUNNEL_AGENT_PYZ"
INLINE_END = "BATCHTUNNEL_AGENT_PYZ_END"


def inline_zipapp(path: str, batch_script: str) -> str:
    """Shell lines that write the zipapp at ``path`` (read here, on the hub) into the job's TMPDIR,
    name it in $BATCHTUNNEL_AGENT_PYZ and remove it when the batch script exits."""
    if "prologue" not in batch_script:
        raise ConfigurationError("agent_zipapp_inline: this spawner's batch_script has no {prologue} to unpack the "
                                 "agent in; put agent_zipapp on a shared filesystem instead")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigurationError(f"agent_zipapp: cannot read {path} on the hub (agent_zipapp_inline reads it "
                                 f"there): {exc.strerror or exc}") from None
    if not data.startswith(b"#!") or not zipfile.is_zipfile(io.BytesIO(data)):
        raise ConfigurationError(f"agent_zipapp: {path} is not a zipapp; write one with `batchtunnel agent-pyz`")
    return "\n".join([
        "# batchtunnel: the agent (batchtunnel-agent.pyz), unpacked for this job, removed at its end",
        f'{INLINE_VARIABLE}=$(mktemp "${{TMPDIR:-/tmp}}/batchtunnel-agent.XXXXXXXX")',
        f"trap 'rm -f \"${INLINE_VARIABLE}\"' EXIT",
        f"base64 -d > \"${INLINE_VARIABLE}\" <<'{INLINE_END}'",
        base64.encodebytes(data).decode("ascii").rstrip("\n"),
        INLINE_END,
    ])


def loggable_script(script: str) -> str:
    """The batch script for the hub's log: an inlined agent shows as its size, not as its base64."""
    return re.sub(rf"(<<'{INLINE_END}'\n)(.*?)(\n{INLINE_END}\n)",
                  lambda m: f"{m.group(1)}[batchtunnel-agent.pyz: {len(m.group(2))} characters of base64]{m.group(3)}",
                  script, flags=re.DOTALL)


class AgentCommandMixin(Configurable):
    """The agent's part of the batch script (a base of BrokerTunnelMixin)."""

    agent_cmd = List(
        Unicode(),
        ["batchtunnel", "agent"],
        help="Command line, inside the job, that starts the agent (the job's Python environment).",
    ).tag(config=True)

    agent_zipapp = Unicode(
        "",
        help="""
        Run the agent from batchtunnel-agent.pyz (written by ``batchtunnel agent-pyz``) with the node's
        own Python (agent_python) instead of agent_cmd: the job's environment needs no batchtunnel and
        no pip. Its path as the nodes see it, on a filesystem they share with the hub; or, with
        agent_zipapp_inline, its path on the hub. Empty: agent_cmd.
        """,
    ).tag(config=True)

    agent_zipapp_inline = Bool(
        False,
        help="""
        Put agent_zipapp, read on the hub, into each batch script (base64, about 1.35 times the file):
        the job unpacks it into its TMPDIR and removes it when the script ends. For nodes that share no
        filesystem with the hub. Needs a batch_script with a prologue (every backend but HTCondor).
        """,
    ).tag(config=True)

    agent_python = Unicode(
        "python3",
        help="""
        The node's Python that runs agent_zipapp. ``batchtunnel agent-pyz`` says the oldest version the
        file runs on (3.9 with websockets 15; this hub's websockets may ask for newer).
        """,
    ).tag(config=True)

    agent_proxy = Unicode(
        "",
        help="""
        HTTP proxy the agent dials the broker through, for nodes whose only way out is a site proxy:
        ``http://HOST:PORT`` (``http://USER:PASSWORD@HOST:PORT`` if it needs credentials), or ``none``
        to ignore the job's ``https_proxy``. Given to the job as BATCHTUNNEL_PROXY, in its environment,
        never on a command line. Empty: the agent uses the job's own ``https_proxy`` / ``no_proxy``, as
        curl and pip do. The proxy must allow CONNECT to the broker's port.
        """,
    ).tag(config=True)

    hub_api_via_tunnel = Bool(
        False,
        help="""
        Single-outbound-port mode: the job reaches the hub's API through the agent and the broker too,
        so nodes that may dial only the broker's port work. The broker must run with
        --hub-api HOST:PORT (the hub's hub_bind_url). False: the job talks to the hub's API directly.
        """,
    ).tag(config=True)

    @validate("agent_proxy")
    def _check_agent_proxy(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip()
        if value and value.lower() != "none":  # the agent checks the rest (agent/proxy.py); catch the worst early
            parts = urlsplit(value if "://" in value else "http://" + value)
            if parts.scheme != "http" or not parts.hostname:
                raise TraitError("agent_proxy: give http://HOST:PORT (the agent dials the broker through its "
                                 "CONNECT), 'none', or nothing")
        return value

    def agent_command(self) -> str:
        """What the batch script runs before ``-- <notebook command>``."""
        options = ["--hub-api-via-tunnel"] if self.hub_api_via_tunnel else []
        if not self.agent_zipapp:
            return shlex.join([*self.agent_cmd, *options])
        zipapp = f'"${INLINE_VARIABLE}"' if self.agent_zipapp_inline else shlex.quote(self.agent_zipapp)
        return " ".join([shlex.quote(self.agent_python), zipapp, *map(shlex.quote, options)])

    def agent_unpacking(self, batch_script: str) -> str:
        """Shell lines for the script's prologue ("" unless agent_zipapp_inline)."""
        if not (self.agent_zipapp and self.agent_zipapp_inline):
            return ""
        return inline_zipapp(self.agent_zipapp, batch_script)

    def agent_environment(self) -> dict[str, str]:
        """The agent's settings that go to the job in its environment (besides token, URL and CA)."""
        return {"BATCHTUNNEL_PROXY": self.agent_proxy} if self.agent_proxy else {}
