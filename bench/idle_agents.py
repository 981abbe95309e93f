"""Hold N idle agents connected to a broker, in one process (broker memory; the reconnect storm).

    python -m bench.idle_agents URL CAFILE TOKENS_FILE [shipped]   (from the repository root; one token a line)

With ``shipped`` the agents reconnect with the shipped backoff (0.5 s doubling to 30 s); without, with
a short one (0.2 s to 2 s) so the memory figure is taken sooner.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from batchtunnel.agent.config import AgentConfig
from batchtunnel.agent.dialer import Agent


async def main(url: str, cafile: str, tokens: list[str], shipped: bool) -> None:
    initial, most = (AgentConfig.backoff_initial, AgentConfig.backoff_max) if shipped else (0.2, 2.0)
    agents = [Agent(AgentConfig(url=url, token=t, cafile=cafile, backoff_initial=initial, backoff_max=most))
              for t in tokens]
    await asyncio.gather(*(a.run() for a in agents))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    with open(sys.argv[3]) as f:
        tokens = [line.strip() for line in f if line.strip()]
    asyncio.run(main(sys.argv[1], sys.argv[2], tokens, sys.argv[4:5] == ["shipped"]))
