"""Ready-made spawners: batchspawner's, with the broker-backed connect step.

Registered under the ``jupyterhub.spawners`` entry point, so
``c.JupyterHub.spawner_class = "slurm-tunnel"`` works.

| entry point      | class                   | batch system             |
|------------------|-------------------------|--------------------------|
| slurm-tunnel     | SlurmTunnelSpawner      | Slurm                    |
| torque-tunnel    | TorqueTunnelSpawner     | Torque                   |
| pbs-tunnel       | PBSTunnelSpawner        | PBS Pro / OpenPBS        |
| lsf-tunnel       | LsfTunnelSpawner        | IBM Spectrum LSF         |
| gridengine-tunnel| GridEngineTunnelSpawner | (Son of / Univa) Grid Engine |
| condor-tunnel    | CondorTunnelSpawner     | HTCondor                 |
"""

from __future__ import annotations

from typing import Any

from batchspawner import CondorSpawner, GridengineSpawner, LsfSpawner, PBSSpawner, SlurmSpawner, TorqueSpawner
from traitlets import Unicode

from .options import Choice
from .tunnel import BrokerTunnelMixin


class SlurmTunnelSpawner(BrokerTunnelMixin, SlurmSpawner):  # type: ignore[misc]
    """SlurmSpawner through the broker; shows Slurm's pending reason on the spawn page."""

    # "%T %B %r": state, execution host, reason (Slurm prints "n/a" as host while pending)
    batch_query_cmd = Unicode("squeue -h -j {job_id} -o '%T %B %r'").tag(config=True)
    state_exechost_re = Unicode(r"^\S+\s+((?:[\w_-]+\.?)+)").tag(config=True)

    def pending_reason(self) -> str:
        parts = (self.job_status or "").split(None, 2)
        reason = parts[2].strip() if len(parts) == 3 else ""
        return "" if reason in ("", "None", "(null)") else reason


class TorqueTunnelSpawner(BrokerTunnelMixin, TorqueSpawner):  # type: ignore[misc]
    """TorqueSpawner through the broker."""

    def format_resources(self, choice: Choice) -> dict[str, Any]:
        variables = super().format_resources(choice)
        variables["memory"] = f"{choice.memory_gb}gb"  # PBS spelling
        return variables


class PBSTunnelSpawner(BrokerTunnelMixin, PBSSpawner):  # type: ignore[misc]
    """PBSSpawner through the broker."""

    def format_resources(self, choice: Choice) -> dict[str, Any]:
        variables = super().format_resources(choice)
        variables["memory"] = f"{choice.memory_gb}gb"
        return variables


class LsfTunnelSpawner(BrokerTunnelMixin, LsfSpawner):  # type: ignore[misc]
    """LsfSpawner through the broker."""


class GridEngineTunnelSpawner(BrokerTunnelMixin, GridengineSpawner):  # type: ignore[misc]
    """GridengineSpawner through the broker."""


class CondorTunnelSpawner(BrokerTunnelMixin, CondorSpawner):  # type: ignore[misc]
    """CondorSpawner through the broker (no condor_ssh_to_job needed)."""


__all__ = [
    "CondorTunnelSpawner", "GridEngineTunnelSpawner", "LsfTunnelSpawner", "PBSTunnelSpawner",
    "SlurmTunnelSpawner", "TorqueTunnelSpawner",
]
