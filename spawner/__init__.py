"""JupyterHub spawners built on batchspawner, with the connect-to-job step.

- :class:`ConnectToJobMixin` (``connect.py``): the generic step, any command, any batchspawner class.
- :class:`BrokerTunnelMixin` (``tunnel.py``): the step through our broker, a tunnel per job.
- Ready-made spawners (``spawners.py``): ``SlurmTunnelSpawner``, ``TorqueTunnelSpawner``, ...

Importing this package also replaces batchspawner's port-report API handler by
a hardened one (``port_report.py``).
"""

from ..wire import ConnectToJobError, OptionsError
from . import port_report
from .connect import ConnectToJobMixin
from .spawners import (
    CondorTunnelSpawner,
    GridEngineTunnelSpawner,
    LsfTunnelSpawner,
    MoabTunnelSpawner,
    PBSTunnelSpawner,
    SlurmTunnelSpawner,
    TorqueTunnelSpawner,
)
from .tunnel import BrokerTunnelMixin

port_report.install()

__all__ = [
    "BrokerTunnelMixin", "CondorTunnelSpawner", "ConnectToJobError", "ConnectToJobMixin", "OptionsError",
    "GridEngineTunnelSpawner", "LsfTunnelSpawner", "MoabTunnelSpawner", "PBSTunnelSpawner", "SlurmTunnelSpawner",
    "TorqueTunnelSpawner",
]
