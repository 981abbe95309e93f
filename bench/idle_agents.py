"""Hold N idle agents connected to a broker, in one process (for the broker-memory figure).

    python bench/idle_agents.py URL CAFILE TOKENS_FILE    (one token per line)
"""

from __future__ import annotations

import asyncio
import logging
import sys

from batchtunnel.agent import Agent, AgentConfig


async def main(url: str, cafile: str, tokens: list[str]) -> None:
    agents = [Agent(AgentConfig(url=url, token=t, cafile=cafile, backoff_initial=0.2, backoff_max=2))
              for t in tokens]
    await asyncio.gather(*(a.run() for a in agents))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    with open(sys.argv[3]) as f:
        asyncio.run(main(sys.argv[1], sys.argv[2], [line.strip() for line in f if line.strip()]))
