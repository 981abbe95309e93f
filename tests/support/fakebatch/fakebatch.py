#!/usr/bin/env python3
"""A stand-in for a batch system at the command boundary, for spawner tests.

Slurm (sbatch, squeue, scancel) and Torque (qsub, qstat -x, qdel) spellings.
Jobs run on this machine: the submit command starts the script from stdin with
the environment it was given, in its own session. State lives in $FAKEBATCH_DIR.
``FAKEBATCH_PENDING=<seconds>`` keeps new jobs pending (reason "Resources") that long.
Real Slurm is exercised by the real-Slurm end-to-end tests; this only models
what the spawner sees of a batch system we cannot install here (Torque).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKEBATCH_DIR", "/tmp/fakebatch"))


def submit(args: list[str]) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    counter = STATE / "counter"
    job = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(job))
    script = sys.stdin.read()
    (STATE / f"{job}.sh").write_text(script)
    env_file = STATE / f"{job}.env.json"
    env_file.touch(mode=0o600)
    env_file.write_text(json.dumps(dict(os.environ)))
    chdir = next((line.split("=", 1)[1] for line in script.splitlines()
                  if line.startswith("#SBATCH --chdir=")), str(STATE))
    pending = float(os.environ.get("FAKEBATCH_PENDING", "0"))
    started = STATE / f"{job}.started"
    wrapper = f"sleep {pending}; touch {started}; exec bash {STATE / f'{job}.sh'}"
    with open(STATE / f"{job}.out", "wb") as out:
        proc = subprocess.Popen(["bash", "-c", wrapper], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=chdir if os.path.isdir(chdir) else None,
                                start_new_session=True)
    (STATE / f"{job}.pid").write_text(str(proc.pid))
    if TORQUE:
        print(f"{job}.fakepbs")
    else:
        print(job if "--parsable" in args else f"Submitted batch job {job}")
    return 0


def _pid(job: str) -> int | None:
    job = job.split(".")[0]
    try:
        pid = int((STATE / f"{job}.pid").read_text())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return None
    except OSError:
        return None
    return pid


def log_query(job: str) -> None:
    """One line per status query (time, job, state), for tests that count what a spawn asks."""
    started = (STATE / f"{job.split('.')[0]}.started").exists()
    state = "gone" if _pid(job) is None else "running" if started else "pending"
    with open(STATE / "queries.log", "a") as f:
        f.write(f"{time.monotonic():.3f} {job.split('.')[0]} {state}\n")


def squeue(args: list[str]) -> int:
    job = args[args.index("-j") + 1]
    log_query(job)
    if _pid(job) is None:
        return 0  # finished or unknown: nothing listed
    if (STATE / f"{job}.started").exists():
        print("RUNNING localhost None")
    else:
        print("PENDING n/a Resources")
    return 0


def qstat(args: list[str]) -> int:
    job = args[-1]
    log_query(job)
    if _pid(job) is None:
        state, host = "C", ""
    else:
        state = "R" if (STATE / f"{job.split('.')[0]}.started").exists() else "Q"
        host = "<exec_host>localhost/0</exec_host>" if state == "R" else ""
    print(f"<Data><Job><Job_Id>{job}</Job_Id><job_state>{state}</job_state>{host}</Job></Data>")
    return 0


def cancel(args: list[str]) -> int:
    job = args[0]
    pid = _pid(job)
    if pid is None:
        return 0
    os.killpg(pid, signal.SIGTERM)
    for _ in range(100):
        if _pid(job) is None:
            return 0
        time.sleep(0.05)
    os.killpg(pid, signal.SIGKILL)
    return 0


COMMANDS = {"sbatch": submit, "squeue": squeue, "scancel": cancel, "qsub": submit, "qstat": qstat, "qdel": cancel}
TORQUE = Path(sys.argv[0]).name.startswith("q")

if __name__ == "__main__":
    sys.exit(COMMANDS[Path(sys.argv[0]).name](sys.argv[1:]))
