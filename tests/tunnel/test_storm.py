"""500 agents whose broker is killed and restarted all come back (issue #6's reconnect storm); then
all their links are reset at once, and all 500 sessions resume.

The agents run in this process with the shipped reconnect settings; the figures (time, memory,
descriptors) are measured by bench/storm.py and shown in docs/benchmarks.md, not asserted here.
"""

from __future__ import annotations

import asyncio
import resource

from batchtunnel.agent.config import AgentConfig
from batchtunnel.agent.dialer import Agent

from tests.support.processes import eventually, reset_connections
from tests.support.tunnel import BrokerProcess

AGENTS = 500
CROWD = 'batchtunnel_refused_total{cause="crowd"}'
BLOCKED = 'batchtunnel_refused_total{cause="blocked"}'


async def test_500_agents_come_back_after_a_broker_kill9(broker: BrokerProcess) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * AGENTS)), hard))
    tokens = [broker.client.create_tunnel(f"storm{i}")["token"] for i in range(AGENTS)]
    agents = [Agent(AgentConfig(url=broker.agent_url, token=t, cafile=broker.pki.ca)) for t in tokens]
    tasks = [asyncio.ensure_future(a.run()) for a in agents]
    try:
        def connected() -> float:
            return broker.metrics()["batchtunnel_agents_connected"]

        await eventually(lambda: connected() == AGENTS, 120, "all agents to connect", 0.2)
        fds_with_agents = broker.fd_count()
        assert broker.proc is not None
        broker.proc.kill9()
        await eventually(lambda: not any(a.connected.is_set() for a in agents), 30, "every agent to notice")
        await asyncio.to_thread(broker.start)  # in a thread: the agents' timers must keep running meanwhile
        await eventually(lambda: connected() == AGENTS, 120, "all agents to come back", 0.2)
        assert all(a.connected.is_set() for a in agents)
        # No descriptor left behind by the crowd: one per agent, as before the restart (± the API's own).
        assert broker.fd_count() <= fds_with_agents + 5
        m = broker.metrics()
        crowd, blocked = m[CROWD], m[BLOCKED]
        print(f"\nrefused at the accept: {crowd:.0f}, for failures: {blocked:.0f}")
        assert blocked == 0  # nobody failed to authenticate

        # Every agent's link reset at the same instant (a NAT or a proxy dropping them all): each
        # session is held by the broker and resumed by its agent, none started afresh.
        assert await asyncio.to_thread(reset_connections, "127.0.0.1", broker.agent_port) == AGENTS
        await eventually(lambda: broker.metrics()["batchtunnel_resumes_total"] >= AGENTS, 120,
                         "every session to resume", 0.2)
        await eventually(lambda: connected() == AGENTS, 60, "all agents connected again", 0.2)
        m = broker.metrics()
        assert m["batchtunnel_resumes_total"] == AGENTS and m["batchtunnel_agents_suspended"] == 0
        assert broker.fd_count() <= fds_with_agents + 5
    finally:
        for a in agents:
            a.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
