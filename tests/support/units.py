"""contrib/systemd's units, run the way systemd would run them (systemd is not PID 1 on these machines).

A site root (a temporary directory other users can enter) stands in for /etc, /var/lib and /run; the
programs the units name under /opt and /usr/local are this checkout's. The broker runs from a Python
environment other users can read (.jobenv, on the system's python3), as /opt/batchtunnel would be: as
the unit's User, with its LimitNOFILE and UMask, in its StateDirectory, RuntimeDirectory and
ConfigurationDirectory.
"""

from __future__ import annotations

import configparser
import os
import pwd
import resource
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from batchtunnel.client import BrokerClient

from .hub import CHP, ROOT
from .processes import BIN, ProcessGroup

UNITS = ROOT / "contrib" / "systemd"
JOBENV = ROOT / ".jobenv" / "bin"
INSTALLED = {  # where the units expect the programs -> where this checkout has them
    "/opt/batchtunnel/bin/batchtunnel": JOBENV / "batchtunnel",
    "/opt/jupyterhub/bin/jupyterhub": BIN / "jupyterhub",
    "/opt/jupyterhub/bin": BIN,
    "/usr/local/bin/configurable-http-proxy": CHP,
}


def unit(name: str) -> dict[str, str]:
    """The [Service] section of a unit in contrib/systemd."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return dict(parser["Service"])


def installed_here(text: str) -> str:
    for expected, here in INSTALLED.items():
        text = text.replace(expected, str(here))
    return text


def system_user(name: str) -> pwd.struct_passwd:
    """The unit's system account, created as the admin guide says if it is missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                       check=True)
        return pwd.getpwnam(name)


@dataclass
class BrokerUnit:
    """batchtunnel-broker.service with its broker.toml, under a site root."""

    procs: ProcessGroup
    site: Path
    listen: str  # replaces the shipped 0.0.0.0:8765
    settings: dict[str, str] = field(default_factory=dict)  # more broker.toml keys (TOML values, as text)
    certs: tuple[str, ...] = ("--hostname", "localhost")  # `batchtunnel certs init` arguments

    def __post_init__(self) -> None:
        self.service = unit("batchtunnel-broker.service")
        self.user = self.service["User"]
        self.account = system_user(self.user)
        self.etc = self.site / "etc" / "batchtunnel"
        self.state = self.site / "var" / "lib" / "batchtunnel"
        self.run = self.site / "run" / "batchtunnel"
        # Made as systemd makes them: owned by the unit's user, with the unit's modes.
        for path, mode in ((self.etc, 0o755), (self.state, int(self.service["StateDirectoryMode"], 8)),
                           (self.run, int(self.service["RuntimeDirectoryMode"], 8))):
            path.mkdir(parents=True)
            os.chown(path, self.account.pw_uid, self.account.pw_gid)
            path.chmod(mode)
        self.site.chmod(0o755)
        subprocess.run([str(BIN / "batchtunnel"), "certs", "init", "--dir", str(self.etc / "pki"), *self.certs],
                       check=True, capture_output=True)
        for path in [self.etc / "pki", *(self.etc / "pki").iterdir()]:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)
        config = self.on_site((UNITS / "broker.toml").read_text()).replace("0.0.0.0:8765", self.listen)
        config += "".join(f"{key} = {value}\n" for key, value in self.settings.items())
        (self.etc / "broker.toml").write_text(config)
        argv = shlex.split(self.on_site(installed_here(self.service["ExecStart"])))
        # systemd sets LimitNOFILE as both limits; this sandbox may not raise its own hard limit that
        # far, and the broker raises its soft limit to the hard one at start: start it low to see it do so.
        self.nofile = str(min(int(self.service["LimitNOFILE"]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        self.command = ["prlimit", f"--nofile=1024:{self.nofile}", "setpriv", f"--reuid={self.user}",
                        f"--regid={self.user}", "--init-groups", "sh", "-c",
                        f"umask {self.service['UMask']} && exec {shlex.join(argv)}"]

    def on_site(self, text: str) -> str:
        """``text`` with /etc/batchtunnel, /var/lib/batchtunnel and /run/batchtunnel under the site root."""
        for where in ("/etc/batchtunnel", "/var/lib/batchtunnel", "/run/batchtunnel"):
            text = text.replace(where, f"{self.site}{where}")
        return text

    @property
    def token_file(self) -> Path:
        return self.state / "admin.token"  # written at the first start, for the hub to read

    @property
    def api_url(self) -> str:
        return f"unix:{self.run / 'api.sock'}"

    def client(self) -> BrokerClient:
        return BrokerClient(self.api_url, self.token_file.read_text().strip())

    def start(self, name: str = "broker") -> int:
        """Start the unit's command line; returns its PID once its API answers on the unix socket."""
        proc = self.procs.start(name, self.command, env={"BATCHTUNNEL_ADMIN_TOKEN": ""}, cwd=self.site)

        def answers() -> bool:
            try:
                self.client().tunnels()
            except Exception:
                return False
            return True

        proc.wait_ready(answers, 30, "the broker's API on its unix socket")
        return proc.pid
