"""contrib/systemd: the units are valid (systemd-analyze verify), and what the broker's unit promises
holds when its command line runs the way systemd would run it (systemd is not PID 1 here).

The broker runs from a Python environment other users can read (.jobenv, on the system's python3), as
/opt/batchtunnel would be: as the unit's User, with its LimitNOFILE and UMask, in stand-ins for its
StateDirectory, RuntimeDirectory and ConfigurationDirectory.
"""

from __future__ import annotations

import configparser
import os
import pwd
import resource
import shlex
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from batchtunnel.client import BrokerClient

from tests.support.hub import CHP, ROOT
from tests.support.processes import BIN, ProcessGroup, free_port, wait_until

UNITS = ROOT / "contrib" / "systemd"
JOBENV = ROOT / ".jobenv" / "bin"
INSTALLED = {  # where the units expect the programs -> where this checkout has them
    "/opt/batchtunnel/bin/batchtunnel": JOBENV / "batchtunnel",
    "/opt/jupyterhub/bin/jupyterhub": BIN / "jupyterhub",
    "/usr/local/bin/configurable-http-proxy": CHP,
}

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


def unit(name: str) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return dict(parser["Service"])


def installed_here(text: str) -> str:
    for expected, here in INSTALLED.items():
        text = text.replace(expected, str(here))
    return text


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


def run_as_the_unit_says(procs: ProcessGroup, tmp_path: Path) -> None:
    service = unit("batchtunnel-broker.service")
    user = service["User"]
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", user],
                       check=True)
        account = pwd.getpwnam(user)
    # Stand-ins for /etc, /var/lib and /run, made as systemd makes them: owned by the user, the unit's modes.
    etc, state, run = (tmp_path / "etc" / "batchtunnel", tmp_path / "var" / "lib" / "batchtunnel",
                       tmp_path / "run" / "batchtunnel")
    for path, mode in ((etc, 0o755), (state, int(service["StateDirectoryMode"], 8)),
                       (run, int(service["RuntimeDirectoryMode"], 8))):
        path.mkdir(parents=True)
        os.chown(path, account.pw_uid, account.pw_gid)
        path.chmod(mode)
    tmp_path.chmod(0o755)
    subprocess.run([str(BIN / "batchtunnel"), "certs", "init", "--dir", str(etc / "pki"), "--hostname", "localhost"],
                   check=True, capture_output=True)
    for path in (etc / "pki").iterdir():
        os.chown(path, account.pw_uid, account.pw_gid)
    os.chown(etc / "pki", account.pw_uid, account.pw_gid)
    port = free_port()
    config = (UNITS / "broker.toml").read_text().replace("/etc/batchtunnel", str(etc)).replace(
        "/var/lib/batchtunnel", str(state)).replace("/run/batchtunnel", str(run)).replace(
        "0.0.0.0:8765", f"127.0.0.1:{port}")
    (etc / "broker.toml").write_text(config)
    argv = shlex.split(installed_here(service["ExecStart"]).replace("/etc/batchtunnel", str(etc)))
    # systemd sets LimitNOFILE as both limits; this sandbox may not raise its own hard limit that far, and
    # the broker raises its soft limit to the hard one at start: start it low to see that it does.
    nofile = str(min(int(service["LimitNOFILE"]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    command = ["prlimit", f"--nofile=1024:{nofile}", "setpriv", f"--reuid={user}", f"--regid={user}",
               "--init-groups", "sh", "-c", f"umask {service['UMask']} && exec {shlex.join(argv)}"]

    def answers() -> bool:
        try:
            BrokerClient(f"unix:{run / 'api.sock'}", (state / "admin.token").read_text().strip()).tunnels()
        except Exception:
            return False
        return True

    def start(name: str) -> int:
        proc = procs.start(name, command, env={"BATCHTUNNEL_ADMIN_TOKEN": ""}, cwd=tmp_path)
        wait_until(lambda: answers() or not proc.alive(), 30, "the broker's API on its unix socket")
        assert proc.alive(), proc.log()
        return proc.pid

    pid = start("broker")
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{account.pw_uid}\t{account.pw_uid}" in status  # the unit's user, not root
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert any(line.startswith("Max open files") and line.split()[3:5] == [nofile, nofile]
               for line in limits.splitlines())
    token_file = state / "admin.token"  # written at the first start, for the hub to read
    assert token_file.stat().st_uid == account.pw_uid and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    sock = (run / "api.sock").stat()
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o660
    client = BrokerClient(f"unix:{run / 'api.sock'}", token_file.read_text().strip())
    tunnel = client.create_tunnel("kept")
    client.expose(tunnel["id"], 0, 8888)
    assert (state / "broker.sqlite").stat().st_uid == account.pw_uid

    # Restart=on-failure after a crash: the same command line again, and nothing is lost.
    procs.procs[-1].kill9()
    start("broker-again")
    (kept,) = client.tunnels()
    assert kept["id"] == tunnel["id"] and len(kept["exposures"]) == 1
