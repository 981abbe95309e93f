"""The agent, inside the batch job: dials out to the broker and serves the notebook's port.

Runtime needs: websockets and the standard library only.
"""

from .dialer import Agent, AgentConfig
from .supervisor import run_with_command, through_tunnel

__all__ = ["Agent", "AgentConfig", "run_with_command", "through_tunnel"]
