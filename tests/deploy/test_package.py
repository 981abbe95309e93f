"""The release artefacts: sdist and wheel build, pass `twine check`, hold only the `batchtunnel`
package, and the wheel installed into a clean virtual environment runs: `batchtunnel --version`, and
a broker, an agent and the connect step moving bytes."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from batchtunnel import __version__
from batchtunnel.client import BrokerClient

from tests.support.hub import ROOT
from tests.support.processes import BIN, ProcessGroup, free_port, port_open, wait_until
from tests.support.tunnel import ADMIN_TOKEN, target_server


def run(*argv: str | Path, timeout: float = 600) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_installs_into_a_clean_venv_and_moves_bytes(procs: ProcessGroup, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, ROOT)
    (wheel,) = dist.glob(f"batchtunnel-{__version__}-py3-none-any.whl")
    (sdist,) = dist.glob(f"batchtunnel-{__version__}.tar.gz")
    run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    names = zipfile.ZipFile(wheel).namelist()
    assert all(n.startswith(("batchtunnel/", f"batchtunnel-{__version__}.dist-info/")) for n in names), \
        sorted({n.split("/")[0] for n in names})  # no generic module names in site-packages
    assert f"batchtunnel-{__version__}.dist-info/licenses/LICENSE" in names
    assert not any(n.startswith(("batchtunnel/tests/", "batchtunnel/bench/")) for n in names)

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    run(env / "bin" / "python", "-m", "pip", "install", "-q", f"{wheel}[broker]")
    assert run(env / "bin" / "batchtunnel", "--version").strip() == f"batchtunnel {__version__}"

    # The installed broker, agent and connect step carry bytes (TLS, the installed code only).
    bt = str(env / "bin" / "batchtunnel")
    pki = tmp_path / "pki"
    run(bt, "certs", "init", "--dir", pki, "--hostname", "localhost")
    agent_port, api_port, hub_port = free_port(), free_port(), free_port()
    admin = {"BATCHTUNNEL_ADMIN_TOKEN": ADMIN_TOKEN}
    procs.start("broker", [bt, "broker", "--listen", f"127.0.0.1:{agent_port}", "--api-listen",
                           f"127.0.0.1:{api_port}", "--cert", str(pki / "broker.pem"), "--key",
                           str(pki / "broker-key.pem"), "--database", ":memory:"], env=admin, cwd=tmp_path)
    wait_until(lambda: port_open(api_port), 30, "the installed broker")
    api = ["--api-url", f"http://127.0.0.1:{api_port}"]
    token_file = tmp_path / "agent.token"
    created = subprocess.run([bt, "tunnels", "create", *api, "--name", "smoke", "--token-out", str(token_file)],
                             capture_output=True, text=True, env={**admin, "PATH": "/usr/bin:/bin"}, timeout=30)
    assert created.returncode == 0, created.stderr
    tunnel_id, token = created.stdout.strip(), token_file.read_text().strip()
    _, target_port = target_server(procs)
    procs.start("agent", [bt, "agent", "--url", f"wss://localhost:{agent_port}/agent", "--cafile",
                          str(pki / "ca.pem")], env={"BATCHTUNNEL_TOKEN": token})
    procs.start("connect", [bt, "connect", *api, "--tunnel", tunnel_id, "--port", str(hub_port), "--rport",
                            str(target_port)], env=admin)
    wait_until(lambda: port_open(hub_port), 30, "the installed connect step")
    client = BrokerClient(f"http://127.0.0.1:{api_port}", ADMIN_TOKEN)
    wait_until(lambda: client.tunnel(tunnel_id)["agent"]["connected"], 30, "the installed agent")
    echoed = subprocess.run([str(BIN / "python"), "-c", ECHO, str(hub_port)], capture_output=True, timeout=30)
    assert echoed.stdout == b"through the installed wheel", echoed.stderr


ECHO = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s.sendall(b"echo\\nthrough the installed wheel")
s.shutdown(socket.SHUT_WR)
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.buffer.write(data)
"""

