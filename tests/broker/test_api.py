"""The admin API refuses bad requests with a clear message and never leaks a credential."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from batchtunnel.client import ApiError, BrokerClient

from tests.support.processes import ProcessGroup, free_port, port_open
from tests.support.tunnel import BrokerProcess, Pki


def raw(broker: BrokerProcess, method: str, path: str, body: bytes | None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(broker.api_url + path, data=body, method=method)
    req.add_header("Authorization", "Bearer test-admin-token-0123456789abcdef")
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_wrong_admin_token_is_refused(broker: BrokerProcess) -> None:
    with pytest.raises(ApiError) as exc:
        BrokerClient(broker.api_url, "wrong-token-wrong-token").tunnels()
    assert exc.value.status == 401
    # Health and metrics need no token and show no secrets.
    with urllib.request.urlopen(broker.api_url + "/metrics") as resp:
        assert b"batchtunnel_tunnels 0" in resp.read()


def test_token_is_shown_once_and_only_its_hash_is_kept(broker: BrokerProcess) -> None:
    created = broker.client.create_tunnel("alice")
    secret = created["token"].split(".", 1)[1]
    assert len(secret) >= 43  # 256 bits, urlsafe base64
    shown = json.dumps(broker.client.tunnel(created["id"]))
    assert secret not in shown and "token" not in shown
    assert secret.encode() not in Path(broker.database).read_bytes()
    assert created["token"] not in broker.proc.log()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1]", 400, "must be a JSON object"),
        (b'{"rport": 0}', 400, "rport must be an integer 1-65535"),
        (b'{"rport": "80"}', 400, "rport must be an integer"),
        (b'{"rport": 80, "port": 70000}', 400, "port must be an integer 0-65535"),
        (b'{"rport": 80, "host": "0.0.0.0"}', 400, "is not allowed"),
        (b'{"rport": ' + b"[" * 20000, 400, "nested too deeply"),  # not a 500 from a RecursionError
        (b'{"rport": 80, "port": 81}', 400, "port 81 is privileged"),  # the broker often runs as root
        (b'{"rport": 80, "port": 1023}', 400, "--allow-privileged-ports"),
    ],
)
def test_expose_validates_input(broker: BrokerProcess, body: bytes, status: int, message: str) -> None:
    tunnel = broker.client.create_tunnel("v")
    code, answer = raw(broker, "POST", f"/api/tunnels/{tunnel['id']}/exposures", body)
    assert code == status
    assert message in str(answer["error"])


def test_expose_is_idempotent_and_ports_are_not_shared(broker: BrokerProcess) -> None:
    a = broker.client.create_tunnel("a")
    b = broker.client.create_tunnel("b")
    port = free_port()
    assert broker.client.expose(a["id"], port, 8888)["port"] == port
    assert broker.client.expose(a["id"], port, 8888)["port"] == port  # same request: 200
    with pytest.raises(ApiError) as exc:
        broker.client.expose(b["id"], port, 8888)  # another tunnel cannot take it over
    assert exc.value.status == 409
    with pytest.raises(ApiError) as exc:
        broker.client.expose(a["id"], port, 9999)
    assert exc.value.status == 409


def test_unknown_tunnel_and_bad_names(broker: BrokerProcess) -> None:
    with pytest.raises(ApiError) as exc:
        broker.client.tunnel("tnothing")
    assert exc.value.status == 404
    code, answer = raw(broker, "POST", "/api/tunnels", b'{"name": "bad name; rm -rf /"}')
    assert code == 400 and "name" in str(answer["error"])


def test_deleted_tunnel_closes_its_ports(broker: BrokerProcess) -> None:
    from tests.support.processes import port_open

    tunnel = broker.client.create_tunnel("d")
    port = broker.client.expose(tunnel["id"], 0, 8888)["port"]
    assert port_open(port)
    broker.client.delete_tunnel(tunnel["id"])
    assert not port_open(port)
    with pytest.raises(ApiError):
        broker.client.tunnel(tunnel["id"])


def test_privileged_ports_only_when_the_admin_allows_them(procs: ProcessGroup, pki: Pki, tmp_path: Path) -> None:
    port = next(p for p in range(1023, 900, -1) if not port_open(p))
    broker = BrokerProcess(procs, pki, tmp_path, "--allow-privileged-ports")
    tunnel = broker.client.create_tunnel("root")
    assert broker.client.expose(tunnel["id"], port, 8888)["port"] == port
