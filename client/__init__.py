"""The hub side's client of the broker: its admin API and the connect-to-job step.

Standard library only, so that the spawner and ``batchtunnel connect``/``tunnels`` never load the
broker's server (aiohttp) to reach it.

- ``api.py``: :class:`BrokerClient`, a small synchronous client of the broker's REST API.
- ``connect.py``: :func:`run_connect`, what ``batchtunnel connect`` runs: expose a tunnel on a
  hub-side port, then watch it in the foreground.
"""

from ..wire import ApiError
from .api import BrokerClient
from .connect import run_connect

__all__ = ["ApiError", "BrokerClient", "run_connect"]
