"""Trusting the broker (CA or pinned certificate) and the life of a tunnel's credential."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading

import pytest
from batchtunnel.certs import authority

from tests.support.processes import BIN, ProcessGroup, eventually, wait_until
from tests.support.tunnel import BrokerProcess, Pki, target_server
from tests.tunnel import client


def fingerprint(path: str) -> str:
    return authority.fingerprint(authority.load_cert(path))


class RecordingTlsServer:
    """A TLS server with the broker's certificate that only records what it is sent (in a thread,
    with plain sockets, so every connection is closed by us whatever the client does)."""

    def __init__(self, pki: Pki) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pki.cert, pki.key)
        self.received = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    with self.ctx.wrap_socket(conn, server_side=True) as tls:
                        while data := tls.recv(65536):
                            self.received += data
                except (OSError, ssl.SSLError):
                    pass

    def __enter__(self) -> int:
        self.thread.start()
        return int(self.listener.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.listener.close()


def start_agent(procs: ProcessGroup, name: str, url: str, token: str, *flags: str):  # type: ignore[no-untyped-def]
    return procs.start(name, [str(BIN / "batchtunnel"), "agent", "--url", url, *flags],
                       env={"BATCHTUNNEL_TOKEN": token})


async def test_a_pinned_agent_connects_without_any_ca(broker: BrokerProcess, procs: ProcessGroup, pki: Pki) -> None:
    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("pinned")
    start_agent(procs, "agent", broker.agent_url, tunnel["token"], "--fingerprint", fingerprint(pki.cert))
    wait_until(lambda: broker.agent_connected(tunnel["id"]), 15, "the pinned agent to connect")
    port = broker.client.expose(tunnel["id"], 0, target_port)["port"]
    assert await client.echo(port, b"pinned") == b"pinned"


@pytest.mark.parametrize("pin", ["right", "wrong"])
async def test_an_agent_sends_its_token_only_to_the_pinned_certificate(procs: ProcessGroup, pki: Pki,
                                                                       pin: str) -> None:
    # The CA's fingerprint is the plausible mistake: it is not the broker's certificate.
    pinned = fingerprint(pki.cert if pin == "right" else pki.ca)
    token = "t0123456789abcdef.secret-that-must-not-leave-the-node"
    recorder = RecordingTlsServer(pki)
    with recorder as port:
        agent = start_agent(procs, "agent", f"wss://localhost:{port}/agent", token, "--fingerprint", pinned)
        if pin == "right":
            await eventually(lambda: b"\r\n\r\n" in recorder.received, 15, "the upgrade request")
            assert token.encode() in recorder.received  # the control: this is where a token would show
        else:
            await eventually(lambda: "not sending the token" in agent.log(), 15, "the agent to refuse the broker")
            assert "matches no --fingerprint" in agent.log()
            assert bytes(recorder.received) == b""


def test_a_malformed_pin_is_a_configuration_error(pki: Pki) -> None:
    result = subprocess.run([str(BIN / "batchtunnel"), "agent", "--url", "wss://localhost:1/agent",
                             "--fingerprint", "sha256:12:34"], env={"BATCHTUNNEL_TOKEN": "t1.x"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--fingerprint must read sha256:" in result.stderr


async def test_an_expiring_credential_is_refused_and_its_agent_disconnected(
        broker: BrokerProcess, procs: ProcessGroup) -> None:
    _, target_port = target_server(procs)
    tunnel = broker.client.create_tunnel("short-lived", expires_in=6)
    assert tunnel["expires"] == pytest.approx(tunnel["created"] + 6)
    agent = broker.start_agent(tunnel["token"], "agent", "--backoff-max", "1", tunnel_id=tunnel["id"])
    port = broker.client.expose(tunnel["id"], 0, target_port)["port"]
    assert await client.echo(port, b"still valid") == b"still valid"

    await eventually(lambda: "CREDENTIAL_EXPIRED" in agent.log(), 15, "the agent to be disconnected at expiry")
    await eventually(lambda: "refused this agent's credential" in agent.log(), 15, "the redial to be refused")
    assert broker.proc is not None
    assert f"the credential of tunnel {tunnel['id']} expired" in broker.proc.log()
    assert not broker.agent_connected(tunnel["id"])
    assert await client.closed_promptly(port)  # the hub-side port refuses: no agent

    broker.proc.kill9()  # the expiry is kept with the tunnel
    broker.start()
    assert broker.client.tunnel(tunnel["id"])["expires"] == pytest.approx(tunnel["expires"])


def test_expires_in_must_be_a_sensible_number_of_seconds(broker: BrokerProcess) -> None:
    from batchtunnel.client import ApiError

    for bad in (0, -5, "soon", True, 10 ** 9):
        with pytest.raises(ApiError) as exc:
            broker.client.create_tunnel("x", expires_in=bad)  # type: ignore[arg-type]
        assert exc.value.status == 400 and "expires_in" in str(exc.value)


def test_insecure_agents_are_warned_at_every_connect(procs: ProcessGroup, pki: Pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broker = BrokerProcess(procs, pki, tmp_path, "--insecure", plain=True)
    tunnel = broker.client.create_tunnel("plain")
    agent = start_agent(procs, "agent", broker.agent_url, tunnel["token"], "--insecure", "--backoff-max", "1")
    wait_until(lambda: broker.agent_connected(tunnel["id"]), 15, "the agent to connect over ws://")
    assert broker.proc is not None
    assert "tokens travel unencrypted" in broker.proc.log()
    broker.proc.kill9()
    broker.start()
    wait_until(lambda: broker.agent_connected(tunnel["id"]), 15, "the agent to reconnect")
    warning = "connecting over plain ws:// (--insecure): the token travels unencrypted"
    assert agent.log().count(warning) >= 2  # once per dial, not once per run
