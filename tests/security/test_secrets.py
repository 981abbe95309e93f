"""Tokens and keys never show up in logs (at DEBUG), in argv, in error answers or in readable files."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import BIN, ProcessGroup, wait_until
from tests.support.tunnel import ADMIN_TOKEN, BrokerProcess, Pki, target_server
from tests.tunnel import client

from .hostile import HostileAgent, Refused


async def test_no_secret_in_debug_logs_argv_or_answers(procs: ProcessGroup, pki: Pki, tmp_path: Path) -> None:
    broker = BrokerProcess(procs, pki, tmp_path, "--log-level", "DEBUG")
    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("debug")
    token = tunnel["token"]
    secret = token.partition(".")[2]
    wrong = tunnel["id"] + ".wrong-secret-0123456789abcdef0123456789"
    first = broker.start_agent(token, "agent-1", "--log-level", "DEBUG", tunnel_id=tunnel["id"])
    port = broker.client.expose(tunnel["id"], 0, target_port)["port"]
    expected, got, _ = await client.download(port, 4 * 1024 * 1024)
    assert got == expected

    # Everything that logs around credentials: a wrong one, a replacement, a refused API call, a delete.
    bad = broker.start_agent(wrong, "agent-wrong", "--log-level", "DEBUG", wait=False)
    wait_until(lambda: "refused this agent's credential" in bad.log(), 15, "the wrong credential to be refused")
    with pytest.raises(Refused) as refused:
        await HostileAgent.open(broker.agent_url, wrong, pki.ca, source="127.0.0.60")
    answers = [refused.value.body]
    second = broker.start_agent(token, "agent-2", "--log-level", "DEBUG", wait=False)
    wait_until(lambda: "REPLACED" in first.log(), 15, "the second agent to replace the first")
    from batchtunnel.client import ApiError, BrokerClient

    with pytest.raises(ApiError) as api_refusal:
        BrokerClient(broker.api_url, wrong).tunnels()
    answers.append(str(api_refusal.value))
    broker.client.delete_tunnel(tunnel["id"])
    wait_until(lambda: "refused this agent's credential" in second.log(), 15, "the deleted tunnel's agent refused")

    secrets = {"tunnel secret": secret, "wrong secret": wrong.partition(".")[2], "admin token": ADMIN_TOKEN}
    assert_nowhere(secrets, procs, answers, Path(broker.database))


def assert_nowhere(secrets: dict[str, str], procs: ProcessGroup, answers: list[str], database: Path) -> None:
    """No secret in any process's log or argv, in any error answer, or readable in the database."""
    assert any("DEBUG" in proc.log() for proc in procs.procs), "the run did not log at DEBUG"
    for proc in procs.procs:
        log = proc.log()
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace") if proc.alive() else ""
        for what, value in secrets.items():
            assert value not in log, f"{what} in the log of {proc.name}"
            assert value not in argv, f"{what} in the argv of {proc.name}"
    for answer in answers:
        for what, value in secrets.items():
            assert value not in answer, f"{what} in an error answer: {answer}"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    for value in secrets.values():
        assert value.encode() not in database.read_bytes()


def test_certs_init_show_renew(tmp_path: Path) -> None:
    certs = tmp_path / "certs"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "batchtunnel"), "certs", *args, "--dir", str(certs)],
                              capture_output=True, text=True, timeout=60)

    init = run("init", "--hostname", "hub.example.org", "--hostname", "localhost", "--ip", "10.0.0.7")
    assert init.returncode == 0, init.stderr
    assert "CA fingerprint: sha256:" in init.stdout
    pin = init.stdout.split("(for agents' --fingerprint): ")[1].split()[0]
    for name, mode in (("ca-key.pem", 0o600), ("broker-key.pem", 0o600), ("ca.pem", 0o644), ("broker.pem", 0o644)):
        assert stat.S_IMODE((certs / name).stat().st_mode) == mode, name
    again = run("init", "--hostname", "other")
    assert again.returncode == 2 and "use --force" in again.stderr
    show = run("show")
    assert "DNS:hub.example.org" in show.stdout.replace("<DNSName(value='", "DNS:") or "hub.example.org" in show.stdout
    assert "10.0.0.7" in show.stdout and pin in show.stdout and "valid until" in show.stdout
    ca_before = (certs / "ca.pem").read_bytes()
    renew = run("renew", "--hostname", "hub.example.org")
    assert renew.returncode == 0, renew.stderr
    new_pin = renew.stdout.split("new broker certificate fingerprint: ")[1].split()[0]
    assert new_pin != pin and new_pin in run("show").stdout
    assert (certs / "ca.pem").read_bytes() == ca_before  # agents trusting the CA need nothing new
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(certs / "ca.pem"), str(certs / "broker.pem")],
                            capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert os.access(certs / "broker-key.pem", os.R_OK)
