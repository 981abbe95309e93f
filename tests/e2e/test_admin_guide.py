"""The admin guide (docs/admin-guide.md), followed on the real Slurm cluster as a new site would.

The broker, configurable-http-proxy and JupyterHub run the command lines of their units in
contrib/systemd (users, environment files, working directories), with broker.toml as shipped; the
hub's jupyterhub_config.py is the guide's own block, then the status page's block, with only what a
site fills in replaced (SITE below: host, ports, paths, partition). Then a user's notebook is spawned,
runs a cell on the node, and is stopped. Test-only lines come last and are listed in TEST_ONLY.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import ROOT, HubClient
from tests.support.kernel import kernel
from tests.support.processes import ProcessGroup, free_port, port_open, wait_until
from tests.support.units import BrokerUnit, installed_here, unit

from .conftest import HUB_SIDE, REQUIREMENTS, empty_queue
from .test_slurm import spawn, squeue, user_http

GUIDE = ROOT / "docs" / "admin-guide.md"
USER = "btslurm1"

pytestmark = REQUIREMENTS


def guide_block(after: str, language: str = "python") -> str:
    """The first ```language block of the guide after the line containing ``after``, dedented."""
    text = GUIDE.read_text()
    start = text.index(after)
    match = re.search(rf"^[ ]*```{language}\n(.*?)^[ ]*```$", text[start:], re.S | re.M)
    assert match, f"no {language} block after {after!r} in {GUIDE}"
    return textwrap.dedent(match.group(1))


def fill_in(text: str, site: dict[str, str]) -> str:
    for placeholder, value in site.items():
        assert placeholder in text, f"the guide no longer says {placeholder!r}: update SITE"
        text = text.replace(placeholder, value)
    return text


@pytest.fixture
def site(slurm: str, procs: ProcessGroup) -> Iterator[Path]:
    empty_queue()
    root = Path(tempfile.mkdtemp(prefix="bt-site-"))  # other users (the broker's) must enter it
    try:
        yield root
    finally:
        subprocess.run(["scancel", "--partition=debug"], capture_output=True)
        procs.stop_all()
        shutil.rmtree(root)
        empty_queue()


def test_a_site_set_up_as_the_admin_guide_says_runs_a_notebook(site: Path, procs: ProcessGroup) -> None:
    agent_port, hub_port, hub_api_port, proxy_api_port = free_port(), free_port(), free_port(), free_port()

    # The broker, as "The broker" says: its unit, broker.toml as shipped (the hub's API port filled in).
    broker = BrokerUnit(procs, site, listen=f"{HUB_SIDE}:{agent_port}", certs=("--hostname", "hub.example.org",
                                                                                 "--ip", HUB_SIDE))
    toml = broker.etc / "broker.toml"
    toml.write_text(fill_in(toml.read_text(), {'hub_api = "127.0.0.1:8081"': f'hub_api = "127.0.0.1:{hub_api_port}"'}))
    broker.start()

    # The proxy, as its unit says (DynamicUser: some unprivileged user), with the environment file its
    # unit's comment makes; the hub reads the same file.
    etc = site / "etc" / "jupyterhub"
    etc.mkdir(parents=True)
    proxy_token = secrets.token_hex(32)
    (etc / "proxy.env").write_text(f"CONFIGPROXY_AUTH_TOKEN={proxy_token}\n")
    ports = {"--port 8000": f"--port {hub_port}", "--api-port 8001": f"--api-port {proxy_api_port}",
             "127.0.0.1:8081": f"127.0.0.1:{hub_api_port}"}
    proxy = unit("configurable-http-proxy.service")
    procs.start("proxy", ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                          *shlex.split(fill_in(installed_here(proxy["ExecStart"]), ports))],
                env={"CONFIGPROXY_AUTH_TOKEN": proxy_token})
    wait_until(lambda: port_open(proxy_api_port), 30, "the proxy's API")

    # JupyterHub: the guide's jupyterhub_config.py and the status page's lines, as written there.
    jobenv = str(ROOT / ".jobenv")
    site_values = {
        "http://127.0.0.1:8000": f"http://127.0.0.1:{hub_port}",
        "http://127.0.0.1:8081": f"http://127.0.0.1:{hub_api_port}",
        "http://127.0.0.1:8001": f"http://127.0.0.1:{proxy_api_port}",
        "hub.example.org:8765": f"{HUB_SIDE}:{agent_port}",
        "/shared/jobenv": jobenv,
        '["cpu", "gpu"]': '["debug"]',  # the test cluster's one partition
        '"module load python/3.12"': '""',  # and its one environment, the job's own
    }
    config = fill_in(guide_block("A complete `jupyterhub_config.py`"), site_values)
    status_port = free_port()
    config += fill_in(guide_block("The status page, a JupyterHub service"),
                      {"broker_admin_token_file=": f"port={status_port}, broker_admin_token_file="})
    config = broker.on_site(config)
    token = secrets.token_hex(16)
    test_only = [
        "c.Spawner.env_keep.append('SLURM_CONF')  # the test cluster's slurm.conf is not at Slurm's default path",
        f"c.JupyterHub.services.append({{'name': 'tester', 'api_token': {token!r}}})",
        "c.JupyterHub.load_roles.append({'name': 'tester', 'services': ['tester'], 'scopes': "
        "['admin:users', 'admin:servers', 'access:servers', 'read:users', 'list:users', 'tokens']})",
    ]
    (etc / "jupyterhub_config.py").write_text(config + "\n# TEST_ONLY\n" + "\n".join(test_only) + "\n")
    hub_unit = unit("jupyterhub.service")
    workdir = Path(hub_unit["WorkingDirectory"].replace("/var/lib", f"{site}/var/lib"))
    workdir.mkdir(parents=True)
    environment = dict(line.split("=", 1) for line in (etc / "proxy.env").read_text().splitlines())
    environment.update(e.split("=", 1) for e in shlex.split(installed_here(hub_unit["Environment"])))
    argv = shlex.split(installed_here(hub_unit["ExecStart"]).replace("/etc/jupyterhub", str(etc)))
    hub_proc = procs.start("jupyterhub", argv, env=environment, cwd=workdir)
    hub = HubClient(hub_port, token, proxy_api_port, proxy_token)
    wait_until(lambda: hub.api("GET", "/hub/api/")[0] == 200 or not hub_proc.alive(), 60, "JupyterHub's API")
    assert hub_proc.alive(), hub_proc.log()

    # A notebook: queued, started on the node, reached through proxy -> broker -> agent.
    events = spawn(hub, USER)
    assert events[-1].get("ready"), events
    (tunnel,) = broker.client().tunnels()
    port = tunnel["exposures"][0]["port"]
    assert hub.route_target(USER) == f"http://127.0.0.1:{port}"
    assert tunnel["agent"]["connected"]

    async def run_a_cell() -> str:
        http, base = user_http(hub, USER)
        async with http, kernel(http, base) as k:
            return await k.execute("import os; os.environ.get('SLURMD_NODENAME')")

    assert asyncio.run(run_a_cell()) == "'btnode1'"  # run by slurmd on the node
    assert port_open(status_port)  # the status page's service, started by the hub
    (job,) = [line.split()[0] for line in squeue().splitlines()]
    hub.api("DELETE", f"/hub/api/users/{USER}/server")
    wait_until(lambda: job not in squeue(), 60, "the job to leave squeue")
    wait_until(lambda: broker.client().tunnels() == [], 30, "the tunnel to be deleted")
    assert "Traceback" not in hub_proc.log()

