"""Ready-made spawners: batchspawner's, with the broker-backed connect step.

Registered under the ``jupyterhub.spawners`` entry point, so
``c.JupyterHub.spawner_class = "slurm-tunnel"`` works.

| entry point      | class                   | batch system             |
|------------------|-------------------------|--------------------------|
| slurm-tunnel     | SlurmTunnelSpawner      | Slurm                    |
| torque-tunnel    | TorqueTunnelSpawner     | Torque                   |
| moab-tunnel      | MoabTunnelSpawner       | Moab (over Torque)       |
| pbs-tunnel       | PBSTunnelSpawner        | PBS Pro / OpenPBS        |
| lsf-tunnel       | LsfTunnelSpawner        | IBM Spectrum LSF         |
| gridengine-tunnel| GridEngineTunnelSpawner | (Son of / Univa) Grid Engine |
| condor-tunnel    | CondorTunnelSpawner     | HTCondor                 |
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import stat
from typing import Any

from batchspawner import (
    CondorSpawner,
    GridengineSpawner,
    LsfSpawner,
    MoabSpawner,
    PBSSpawner,
    SlurmSpawner,
    TorqueSpawner,
)
from batchspawner.batchspawner import format_template
from traitlets import Unicode, default

from .options import Choice
from .tunnel import BrokerTunnelMixin

RESERVATION_LINE = "{% endif %}{% if reservation%}#SBATCH --reservation={{reservation}}"
ACCOUNT_AND_QOS = ("{% endif %}{% if account %}#SBATCH --account={{account}}\n"
                   "{% endif %}{% if qos %}#SBATCH --qos={{qos}}\n")


def slurm_script() -> str:
    """batchspawner's Slurm script with ``--account`` and ``--qos`` lines beside its ``--reservation``
    (it has req_account and req_qos, but no line that uses them)."""
    script = str(SlurmSpawner.class_traits()["batch_script"].default_value)
    if RESERVATION_LINE not in script:  # another batchspawner: its script as it is
        return script
    return script.replace(RESERVATION_LINE, ACCOUNT_AND_QOS + RESERVATION_LINE)


class SlurmTunnelSpawner(BrokerTunnelMixin, SlurmSpawner):
    """SlurmSpawner through the broker; shows Slurm's pending reason on the spawn page."""

    @default("batch_script")
    def _batch_script_default(self) -> str:
        return slurm_script()

    # "%T %B %r": state, execution host, reason (Slurm prints "n/a" as host while pending)
    batch_query_cmd = Unicode("squeue -h -j {job_id} -o '%T %B %r'").tag(config=True)
    state_exechost_re = Unicode(r"^\S+\s+((?:[\w_-]+\.?)+)").tag(config=True)

    batch_end_cmd = Unicode(
        "scontrol show job {job_id}",
        help="Command whose output says how a finished job ended (JobState, Reason, ExitCode, StdOut).",
    ).tag(config=True)

    def pending_reason(self) -> str:
        parts = (self.job_status or "").split(None, 2)
        reason = parts[2].strip() if len(parts) == 3 else ""
        return "" if reason in ("", "None", "(null)") else reason

    async def job_end_reason(self, job_id: str) -> str:
        command, _ = _end_command(self, job_id)
        try:
            out = await self.run_command(command)
        except RuntimeError:
            return ""
        fields = dict(re.findall(r"(\w+)=(\S*)", out))
        reason = f"{fields.get('JobState', '?')} ({fields.get('Reason', '?')}), exit code {fields.get('ExitCode', '?')}"
        return _with_output(reason, fields.get("StdOut", ""), self.user.name)


class TorqueTunnelSpawner(BrokerTunnelMixin, TorqueSpawner):
    """TorqueSpawner through the broker."""

    def format_resources(self, choice: Choice) -> dict[str, Any]:
        variables = super().format_resources(choice)
        if "memory" in variables:  # not when it is the admin's own req_memory
            variables["memory"] = f"{choice.memory_gb}gb"  # PBS spelling
        return variables


class MoabTunnelSpawner(TorqueTunnelSpawner, MoabSpawner):
    """MoabSpawner through the broker: Moab's commands (msub, mdiag, mjobctl), Torque's script."""


class PBSTunnelSpawner(BrokerTunnelMixin, PBSSpawner):
    """PBSSpawner through the broker."""

    def format_resources(self, choice: Choice) -> dict[str, Any]:
        variables = super().format_resources(choice)
        if "memory" in variables:
            variables["memory"] = f"{choice.memory_gb}gb"
        return variables


class LsfTunnelSpawner(BrokerTunnelMixin, LsfSpawner):
    """LsfSpawner through the broker."""


class GridEngineTunnelSpawner(BrokerTunnelMixin, GridengineSpawner):
    """GridengineSpawner through the broker; says why a job ended from Grid Engine's accounting."""

    parallel_environment = Unicode(
        "",
        help="Parallel environment that grants the form's CPU cores (``#$ -pe NAME N``), e.g. \"smp\". "
             "Empty: no -pe line, and the job gets the queue's one slot whatever cores says.",
    ).tag(config=True)

    def format_resources(self, choice: Choice) -> dict[str, Any]:
        """Grid Engine's batchspawner script has one free line for directives (``#$ {options}``): the
        runtime (``-l h_rt``), the memory (``-l mem_free``, a scheduling request, not a limit) and with
        parallel_environment the cores go there, after the admin's own req_options."""
        variables = super().format_resources(choice)
        directives = [getattr(self, "req_options", "")]
        if "runtime" in variables:
            directives.append(f"-l h_rt={variables['runtime']}")
        if "memory" in variables:
            directives.append(f"-l mem_free={choice.memory_gb}G")
        if self.parallel_environment and "nprocs" in variables:
            directives.append(f"-pe {self.parallel_environment} {choice.cores}")
        if choice.partition:
            directives.append(f"-q {choice.partition}")
        variables["options"] = " ".join(d for d in directives if d)
        return variables

    batch_end_cmd = Unicode(
        "qacct -j {job_id}",
        help="Command whose output says how a finished job ended (failed, exit_status: Grid Engine's "
             "accounting, written a moment after the job ends).",
    ).tag(config=True)

    async def job_end_reason(self, job_id: str) -> str:
        command, subvars = _end_command(self, job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACCOUNTING_WAIT
        while True:  # the record appears once qmaster writes its accounting file (ACCOUNTING_WAIT)
            try:
                out = await self.run_command(command)
                break
            except RuntimeError:
                if loop.time() > deadline:
                    return ""
                await asyncio.sleep(0.5)
        fields = dict(re.findall(r"^(\w+)\s+(.*?)\s*$", out, re.MULTILINE))
        reason = f"exit status {fields.get('exit_status', '?')}"
        if fields.get("failed", "0") not in ("0", ""):
            reason += f", failed: {fields['failed']}"
        output = re.search(r"^#\$ -o (\S+)", self.batch_script, re.MULTILINE)  # e.g. {homedir}/.jupyterhub.sge.out
        path = format_template(output.group(1), **subvars) if output else ""
        return _with_output(reason, path, self.user.name)


class CondorTunnelSpawner(BrokerTunnelMixin, CondorSpawner):
    """CondorSpawner through the broker (no condor_ssh_to_job needed)."""


__all__ = [
    "CondorTunnelSpawner", "GridEngineTunnelSpawner", "LsfTunnelSpawner", "MoabTunnelSpawner", "PBSTunnelSpawner",
    "SlurmTunnelSpawner", "TorqueTunnelSpawner",
]


ACCOUNTING_WAIT = 20.0
"""Seconds to wait for a finished Grid Engine job's accounting record: qmaster writes the accounting
file every ``accounting_flush_time`` (reporting_params; ``flush_time``, 15 s, unless set). A CI run
gave up after 10 s on a record written 14 s after the job ended."""


def _end_command(spawner: Any, job_id: str) -> tuple[str, dict[str, Any]]:
    """The spawner's batch_end_cmd for ``job_id``, behind its exec_prefix, and the variables used."""
    subvars = {**spawner.get_req_subvars(), "job_id": job_id}
    command = " ".join((format_template(spawner.exec_prefix, **subvars),
                        format_template(spawner.batch_end_cmd, **subvars)))
    return command, subvars


def _with_output(reason: str, path: str, user: str) -> str:
    """The reason, with where the job's output is and how it ends."""
    output = _tail(path, _uid(user))
    if output:
        return f"{reason}; its output ({path}) ends: {output}"
    return f"{reason}; its output: {path}" if path else reason


def _tail(path: str, owner: int | None, lines: int = 3) -> str:
    """The last lines of a job's output file, joined; "" if unreadable, or not a regular file that the
    job's user owns. The hub often runs as root and the file is in the user's directory: a user who
    made it a link to /etc/shadow, or a hard link to a file of root's, must see nothing of it."""
    if owner is None or not path:
        return ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != owner:
            return ""
        file.seek(max(0, info.st_size - 4096))
        text = file.read(4096).decode("utf-8", "replace")
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])[:500]


def _uid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
