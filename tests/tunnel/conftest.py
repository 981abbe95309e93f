from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import ProcessGroup
from tests.support.tunnel import BrokerProcess, Pki, target_server


@dataclass
class TunnelEnv:
    broker: BrokerProcess
    tunnel_id: str
    token: str
    target_port: int
    port: int  # hub-side port exposed towards target_port


@pytest.fixture(scope="module")
def tunnel_env(module_procs: ProcessGroup, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TunnelEnv]:
    """One broker, one target server standing in for a notebook, one tunnel with its agent."""
    broker = BrokerProcess(module_procs, pki, Path(tmp_path_factory.mktemp("broker")))
    _, target_port = target_server(module_procs)
    created = broker.client.create_tunnel("module")
    broker.start_agent(created["token"], tunnel_id=created["id"])
    exposure = broker.client.expose(created["id"], 0, target_port)
    yield TunnelEnv(broker, created["id"], created["token"], target_port, exposure["port"])
