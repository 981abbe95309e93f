"""Nagle's algorithm is off on every TCP connection the broker and the agent hold, with either event loop.

With it on, a small write waits for the ACK of the one before, which the receiver may delay up to 40 ms:
a stream's OPEN followed at once by its first bytes stalled each new connection through a broker on the
asyncio loop by 40 ms (29 connections per second instead of 2,000). asyncio sets TCP_NODELAY only on
sockets whose protocol number is IPPROTO_TCP, and the broker's own accept loop gets sockets with 0.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.processes import ProcessGroup, tcp_nodelay
from tests.support.tunnel import BrokerProcess, Pki, target_server


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_every_connection_of_the_data_path_has_nagle_off(procs: ProcessGroup, pki: Pki, tmp_path: Path,
                                                         loop: str) -> None:
    broker = BrokerProcess(procs, pki, tmp_path, "--event-loop", loop)
    _, target = target_server(procs)
    created = broker.client.create_tunnel("nagle")
    agent = broker.start_agent(created["token"], "agent", "--event-loop", loop, tunnel_id=created["id"])
    port = broker.client.expose(created["id"], 0, target)["port"]
    assert broker.proc is not None
    with socket.create_connection(("127.0.0.1", port)) as hub_side:
        hub_side.sendall(b"echo\nx")
        assert hub_side.recv(1) == b"x"  # the stream is open end to end: every connection exists
        held = {"broker": tcp_nodelay(broker.proc.pid), "agent": tcp_nodelay(agent.pid)}
    peers = {who: {peer[1] for _, peer, _ in sockets} for who, sockets in held.items()}
    # The link on both sides; the hub-side connection on the broker; the connection to the target.
    assert broker.agent_port in peers["agent"] and target in peers["agent"], held
    assert len(held["broker"]) >= 2, held
    assert [s for sockets in held.values() for s in sockets if not s[2]] == [], held
