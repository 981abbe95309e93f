"""Logs a site can feed to its collector: --log-format json gives one JSON object per line, and
--api-access-log one line per admin API request, never with the token it carried."""

from __future__ import annotations

import json
from pathlib import Path

from batchtunnel.client import ApiError, BrokerClient

from tests.support.processes import ProcessGroup, wait_until
from tests.support.tunnel import ADMIN_TOKEN, BrokerProcess, Pki


def test_json_lines_and_an_access_log_without_tokens(procs: ProcessGroup, pki: Pki, tmp_path: Path) -> None:
    broker = BrokerProcess(procs, pki, tmp_path, "--log-format", "json", "--api-access-log")
    created = broker.client.create_tunnel("logged")
    broker.client.tunnels()
    try:
        BrokerClient(broker.api_url, "wrong-admin-token-0123456789").tunnels()
    except ApiError as exc:
        assert exc.status == 401
    assert broker.proc is not None
    wait_until(lambda: '"GET /api/tunnels HTTP/1.1\\" 401' in broker.proc.log(), 10, "the access log")  # type: ignore[union-attr]
    records = [json.loads(line) for line in broker.proc.log().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    access = [r["message"] for r in records if r["logger"] == "batchtunnel.broker.access"]
    assert any('"POST /api/tunnels HTTP/1.1" 201' in line for line in access), access
    assert any('"GET /api/tunnels HTTP/1.1" 200' in line for line in access), access
    assert any("broker ready" in r["message"] for r in records)
    text = broker.proc.log()
    for secret in (ADMIN_TOKEN, created["token"], "wrong-admin-token-0123456789"):
        assert secret not in text
