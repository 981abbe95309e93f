"""contrib/systemd: the units are valid (systemd-analyze verify), and what the broker's unit promises
holds when its command line runs the way systemd would run it (systemd is not PID 1 here).

The broker runs from a Python environment other users can read (.jobenv, on the system's python3), as
/opt/batchtunnel would be: as the unit's User, with its LimitNOFILE and UMask, in stand-ins for its
StateDirectory, RuntimeDirectory and ConfigurationDirectory.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.processes import ProcessGroup, free_port
from tests.support.units import UNITS, BrokerUnit, installed_here

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


@pytest.mark.parametrize("name", ["batchtunnel-broker.service", "jupyterhub.service",
                                  "configurable-http-proxy.service"])
def test_the_units_are_valid(name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_text(installed_here((UNITS / name).read_text()))
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the broker as the unit's system user")
def test_the_broker_runs_as_its_unit_says_and_keeps_its_state_over_a_restart(procs: ProcessGroup) -> None:
    root = Path(tempfile.mkdtemp(prefix="bt-unit-"))  # pytest's own tmp_path is not reachable by other users
    try:
        run_as_the_unit_says(procs, root)
    finally:
        procs.stop_all()
        shutil.rmtree(root)


def run_as_the_unit_says(procs: ProcessGroup, site: Path) -> None:
    broker = BrokerUnit(procs, site, listen=f"127.0.0.1:{free_port()}")
    pid = broker.start()
    account = broker.account
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{account.pw_uid}\t{account.pw_uid}" in status  # the unit's user, not root
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert any(line.startswith("Max open files") and line.split()[3:5] == [broker.nofile, broker.nofile]
               for line in limits.splitlines())
    token_file = broker.token_file  # written at the first start, for the hub to read
    assert token_file.stat().st_uid == account.pw_uid and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    sock = (broker.run / "api.sock").stat()
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o660
    client = broker.client()
    tunnel = client.create_tunnel("kept")
    client.expose(tunnel["id"], 0, 8888)
    assert (broker.state / "broker.sqlite").stat().st_uid == account.pw_uid

    # Restart=on-failure after a crash: the same command line again, and nothing is lost.
    procs.procs[-1].kill9()
    broker.start("broker-again")
    (kept,) = client.tunnels()
    assert kept["id"] == tunnel["id"] and len(kept["exposures"]) == 1
