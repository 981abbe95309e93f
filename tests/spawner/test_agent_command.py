"""The agent's part of the batch script: agent_cmd, the one-file agent on a shared path or inlined (and
unpacked again by a real shell, byte for byte), the proxy setting, and what the hub's log shows."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from batchspawner.batchspawner import format_template
from batchtunnel.spawner import CondorTunnelSpawner, SlurmTunnelSpawner, TorqueTunnelSpawner
from batchtunnel.spawner.agent_command import loggable_script
from batchtunnel.wire import ConfigurationError
from traitlets import TraitError

from tests.support.python39 import build_pyz


def spawner(cls: type = SlurmTunnelSpawner, **config: Any) -> Any:
    """A spawner outside a hub: req_keepvars given, as its default asks the hub for the environment."""
    return cls(user=SimpleNamespace(name="root"), **{"req_keepvars": "PATH", **config})


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pyz") / "batchtunnel-agent.pyz"
    build_pyz(path)
    return path


def test_agent_cmd_by_default_and_the_pyz_from_a_shared_path() -> None:
    assert spawner(agent_cmd=["/opt/bt/bin/batchtunnel", "agent"]).agent_command() == "/opt/bt/bin/batchtunnel agent"
    shared = spawner(agent_zipapp="/shared/bt agent.pyz", agent_python="/usr/bin/python3.9", hub_api_via_tunnel=True)
    assert shared.agent_command() == "/usr/bin/python3.9 '/shared/bt agent.pyz' --hub-api-via-tunnel"
    assert shared.agent_unpacking(shared.batch_script) == ""  # nothing to unpack: the nodes have the file
    assert shared.cmd_formatted_for_batch().startswith("/usr/bin/python3.9 '/shared/bt agent.pyz' "
                                                       "--hub-api-via-tunnel -- ")


@pytest.mark.parametrize("cls", [SlurmTunnelSpawner, TorqueTunnelSpawner])
def test_an_inlined_pyz_is_unpacked_by_the_script_byte_for_byte(cls: type, pyz: Path, tmp_path: Path) -> None:
    s = spawner(cls, agent_zipapp=str(pyz), agent_zipapp_inline=True, options_environments={"Py": "echo module"})
    s.user_options = {"environment": "Py"}  # its prologue and the unpacking both reach the script
    variables = s.batch_variables()
    assert variables["cmd"].startswith('python3 "$BATCHTUNNEL_AGENT_PYZ" -- ')
    script = format_template(s.batch_script, **variables)
    assert "echo module" in script and script.count("BATCHTUNNEL_AGENT_PYZ_END") == 2
    # Run the script's own prologue with a real shell, with the command swapped for a copy of the file.
    prologue = variables["prologue"]
    shell = f'TMPDIR={tmp_path}\n{prologue}\ncp "$BATCHTUNNEL_AGENT_PYZ" {tmp_path}/copy.pyz\n'
    done = subprocess.run(["/bin/sh", "-eu"], input=shell, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "copy.pyz").read_bytes() == pyz.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["copy.pyz"]  # its own copy removed when the script ended


def test_the_log_shows_the_inlined_agent_by_its_size(pyz: Path) -> None:
    s = spawner(agent_zipapp=str(pyz), agent_zipapp_inline=True)
    script = format_template(s.batch_script, **s.batch_variables())
    shown = loggable_script(script)
    assert len(script) > 200_000 and len(shown) < 5_000
    assert "characters of base64]" in shown and shown.count("BATCHTUNNEL_AGENT_PYZ_END") == 2


def test_what_cannot_be_inlined_is_said(pyz: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"batch_script has no \{prologue\}"):
        condor = spawner(CondorTunnelSpawner, agent_zipapp=str(pyz), agent_zipapp_inline=True)
        condor.batch_variables()
    with pytest.raises(ConfigurationError, match=r"cannot read /nonexistent/agent\.pyz on the hub"):
        spawner(agent_zipapp="/nonexistent/agent.pyz", agent_zipapp_inline=True).batch_variables()
    text = tmp_path / "agent.pyz"
    text.write_text("#!/bin/sh\necho not a zip\n")
    with pytest.raises(ConfigurationError, match=r"is not a zipapp; write one with `batchtunnel agent-pyz`"):
        spawner(agent_zipapp=str(text), agent_zipapp_inline=True).batch_variables()


def test_the_proxy_goes_to_the_job_environment_and_bad_ones_are_refused() -> None:
    s = spawner(agent_proxy="http://user:pw@proxy.cluster:3128")
    assert s.agent_environment() == {"BATCHTUNNEL_PROXY": "http://user:pw@proxy.cluster:3128"}
    assert "pw@" not in s.cmd_formatted_for_batch()
    assert spawner().agent_environment() == {}
    for bad in ("socks5://proxy:1080", "https://proxy:3128", "http://"):
        with pytest.raises(TraitError, match=r"agent_proxy: give http://HOST:PORT"):
            spawner(agent_proxy=bad)
