"""Time to a usable notebook on real Slurm, phase by phase, through the tunnel and directly.

    .venv/bin/python -m bench.start_time [--rounds 5] [--write-docs]     (root; from the repository root)

scripts/slurm-cluster.sh runs a real Slurm cluster whose node sits in a network namespace. Two
JupyterHubs (the real configurable-http-proxy each) share it, spawns alternating between them:

- **tunnel**: SlurmTunnelSpawner as shipped (the agent dials the broker; the connect step exposes the
  notebook on the hub), the node's firewall as in the tests (nothing inbound but slurmctld);
- **direct**: batchspawner's SlurmSpawner with our ConnectToJobMixin and no connect command, the notebook
  on the node's address, reached by the hub directly: the node's firewall is opened for these spawns.

Each spawn counts from the API request. Phases, from the hub's log at DEBUG (spawner/timing.py) and the
job's output: job submitted, job running (as the spawner's status query sees it), the job's script
begins on the node, the agent connected (the broker's record; tunnel only), the notebook's port
reported to the hub, the connect step ready (tunnel only), the notebook server listening (its own
log), the notebook answering HTTP at the address the spawner returns (spawner/readiness.py), the
spawner done, the hub's proxy route added, then the first JupyterLab page (GET /user/NAME/lab, with a
token) answered through the proxy. A browser page load follows per spawn: Chromium logged in, from
navigation to JupyterLab's main area drawn; after each direct spawn, once more with the proxy's route
pointed at an ``ssh -L`` forward (aes128-gcm, through an sshd on the hub side, as in bench/run.py) to
the notebook on the node: the paper's mechanism, for the page load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.conftest import CLUSTER, HUB_SIDE, NODE, cluster, empty_queue
from tests.support.browser import chromium_browser, log_in
from tests.support.hub import JOBENV, Hub, ensure_user
from tests.support.processes import ProcessGroup, wait_until
from tests.support.tunnel import BrokerProcess, make_pki

from .harness import ROOT, run_line, write_docs
from .run import AES128, Sshd, ssh_forward, start_sshd

PHASES = [
    ("submitted", "job submitted"),
    ("running", "job running (spawner sees it)"),
    ("script", "job script begins on the node"),
    ("command", "notebook's command started (the agent's log; directly: the script)"),
    ("agent", "agent connected"),
    ("port", "port reported to the hub"),
    ("connect", "connect step ready"),
    ("imports", "notebook's first log line (its imports done)"),
    ("notebook", "notebook server listening (its log)"),
    ("answers", "notebook answers HTTP (spawner sees it)"),
    ("started", "spawner done"),
    ("route", "proxy route added"),
    ("page", "first JupyterLab page"),
]

DIRECT_CONFIG = (
    "from batchspawner import SlurmSpawner",
    "from batchtunnel.spawner.connect import ConnectToJobMixin",
    "class DirectSlurmSpawner(ConnectToJobMixin, SlurmSpawner):",
    "    def state_gethost(self):",  # the node's name resolves on the node only; a site's DNS would do this
    f"        return {NODE!r}",
    "c.JupyterHub.spawner_class = DirectSlurmSpawner",
    "c.DirectSlurmSpawner.exec_prefix = 'sudo -E -u {username}'",
    "c.DirectSlurmSpawner.req_srun = ''",
    "c.DirectSlurmSpawner.startup_poll_interval = 0.2",
    f"c.DirectSlurmSpawner.batchspawner_singleuser_cmd = {str(JOBENV / 'batchspawner-singleuser')!r}",
    f"c.DirectSlurmSpawner.cmd = [{str(JOBENV / 'jupyterhub-singleuser')!r}]",
)
SCRIPT_MARK = "batchtunnel-bench: script begins"
_LOG_TIME = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})")


def log_time(line: str) -> float | None:
    """The wall-clock time of a JupyterHub/Jupyter Server log line ([I 2026-12-04 09:30:01.123 ...]), UTC."""
    match = _LOG_TIME.match(line)
    if match is None:
        return None
    stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f")
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


def phases_from_hub_log(text: str, user: str) -> dict[str, float]:
    """Wall-clock times of the phases the hub logged for ``user``'s latest start."""
    marks: list[tuple[str, float]] = []  # (phase text, +seconds since the start began)
    began = None
    route = None
    for line in text.splitlines():
        if f"Start of {user}'s server: job " in line and " submitted at +" in line:
            marks, route = [], None  # a new start: forget the previous one's lines
        found = re.search(rf"Start of {re.escape(user)}'s server: (.*) at \+(\d+) ms", line)
        if found:
            marks.append((found.group(1), int(found.group(2)) / 1000))
            when = log_time(line)
            if when is not None and not found.group(1).startswith("agent connected"):
                began = when - int(found.group(2)) / 1000
        if f"Adding user {user} to proxy" in line:
            route = log_time(line)
    if began is None:
        raise RuntimeError(f"no start of {user} in the hub's log (is it at DEBUG?)")
    out: dict[str, float] = {}
    for text_, offset in marks:
        key = ("submitted" if text_.endswith("submitted") else "running" if " running on " in text_
               else "agent" if text_.startswith("agent connected") else "port" if text_.startswith("notebook port")
               else "connect" if text_.startswith("connect step") else "started" if text_ == "started"
               else "answers" if text_.startswith("notebook answers HTTP") else None)
        if key is not None:
            out[key] = began + offset
    if route is not None:
        out["route"] = route
    return out


_AGENT_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def phases_from_job_output(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(SCRIPT_MARK):
            out["script"] = float(line.split()[-1])
            out.setdefault("command", out["script"])  # directly the script runs it; the agent's line overrides
        elif "batchtunnel.agent.command: started " in line and (found := _AGENT_TIME.match(line)):
            stamp = datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")
            out["command"] = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
        elif (when := log_time(line)) is not None:
            out.setdefault("imports", when)
            if "is running at" in line:
                out.setdefault("notebook", when)
    return out


def user_token(hub: Hub, user: str) -> str:
    status, body = hub.api("POST", f"/hub/api/users/{user}/tokens", {"note": "bench", "expires_in": 3600})
    assert status == 201, body
    return str(body["token"])


def first_page(hub: Hub, user: str, token: str, timeout: float = 60) -> float:
    """Ask for JupyterLab's page until it answers 200; the time it did."""
    deadline = time.monotonic() + timeout
    while True:
        req = urllib.request.Request(f"http://127.0.0.1:{hub.port}/user/{user}/lab")
        req.add_header("Authorization", f"token {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                if resp.status == 200 and b"JupyterLab" in resp.read():
                    return time.time()
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"JupyterLab of {user} did not answer within {timeout:.0f} s")
        time.sleep(0.01)


def spawn_once(hub: Hub, user: str, token: str) -> dict[str, float]:
    """Start ``user``'s server; every phase's seconds since the request."""
    t0 = time.time()
    status, body = hub.api("POST", f"/hub/api/users/{user}/server", {})
    assert status in (201, 202), body
    page = first_page(hub, user, token)
    when = phases_from_hub_log(hub.proc.log() if hub.proc else "", user)
    job = squeue_job(user)
    output = Path(f"/home/{user}") / f"jupyterhub_slurmspawner_{job}.log"
    wait_until(lambda: "notebook" in phases_from_job_output(output), 30, "the notebook's line in the job output")
    when.update(phases_from_job_output(output))
    when["page"] = page
    return {key: value - t0 for key, value in when.items()}


def squeue_job(user: str) -> str:
    out = subprocess.run(["squeue", "-h", "-u", user, "-o", "%i"], capture_output=True, text=True).stdout.split()
    if len(out) != 1:
        raise RuntimeError(f"expected one job of {user}, squeue says {out}")
    return out[0]


def stop(hub: Hub, user: str) -> None:
    hub.api("DELETE", f"/hub/api/users/{user}/server")
    wait_until(lambda: subprocess.run(["squeue", "-h", "-u", user], capture_output=True, text=True).stdout == "",
               60, f"{user}'s job to leave the queue")
    wait_until(lambda: not (hub.api("GET", f"/hub/api/users/{user}")[1].get("servers") or {}), 60,
               f"{user}'s server to be stopped")


def page_load(browser: Any, hub: Hub, user: str) -> float:
    """Seconds from navigating to JupyterLab (logged in, server running) to its main area drawn."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        log_in(page, hub.port, user)
        page.wait_for_load_state()
        start = time.monotonic()
        page.goto(f"http://127.0.0.1:{hub.port}/user/{user}/lab")
        page.wait_for_selector("#jp-main-dock-panel")
        return time.monotonic() - start
    finally:
        context.close()


def set_route(hub: Hub, user: str, target: str) -> None:
    """Point the proxy's route of ``user``'s server at ``target`` (the hub leaves it until its next check)."""
    body = json.dumps({"target": target, "user": user, "server_name": ""}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{hub.proxy_api_port}/api/routes/user/{user}", data=body,
                                 method="POST")
    req.add_header("Authorization", f"token {hub.proxy_token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status in (200, 201), resp.status


def page_load_through_ssh(browser: Any, hub: Hub, user: str, procs: ProcessGroup, sshd: Sshd) -> float:
    """The page load with the route of ``user``'s (direct) server through ssh -L, then the route back."""
    direct = hub.route_target(user)
    assert direct is not None
    host, _, port = direct.rpartition("//")[2].rstrip("/").partition(":")
    local, pid = ssh_forward(procs, sshd, host, int(port), AES128)
    try:
        set_route(hub, user, f"http://127.0.0.1:{local}")
        assert hub.route_target(user) == f"http://127.0.0.1:{local}", hub.route_target(user)
        return page_load(browser, hub, user)
    finally:
        set_route(hub, user, direct)
        os.kill(pid, 15)


def clean_home(user: str) -> None:
    """A returning user's saved workspace would reopen old tabs: every start begins from the same state.
    The job outputs stay (one per job id), for a look at any spawn afterwards."""
    shutil.rmtree(Path(f"/home/{user}") / ".jupyter" / "lab" / "workspaces", ignore_errors=True)


def pin_slurmd(cpus: set[int]) -> list[str]:
    """Every thread of slurmd on ``cpus`` (and the jobs it starts from now on); slurmd's pids."""
    pids = subprocess.run(["pgrep", "-x", "slurmd"], capture_output=True, text=True).stdout.split()
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), cpus)
    return pids


def pin_node() -> None:
    """slurmd on the last CPU; this process, and so the hubs, broker, proxies, connect steps and
    browser it starts, on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs two CPUs at least")
    pids = pin_slurmd({cpus[-1]})
    if not pids:
        raise SystemExit("--pin: no slurmd running")
    os.sched_setaffinity(0, set(cpus[:-1]))
    print(f"pinned: slurmd {' '.join(pids)} on CPU {cpus[-1]}, the hub side on {cpus[:-1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--pin", action="store_true",
                        help="the node (slurmd, so every job) on the last CPU, the hub side on the others: "
                             "the job shares no core with the hub, broker, proxy and connect step")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (the Slurm cluster, jobs as real users)")
    conf = cluster("up").strip().split("=", 1)[1]
    os.environ["SLURM_CONF"] = conf
    all_cpus = os.sched_getaffinity(0)
    if args.pin:
        pin_node()
    workdir = Path(tempfile.mkdtemp(prefix="bt-start-"))
    procs = ProcessGroup(workdir)
    runs: dict[str, list[dict[str, float]]] = {"tunnel": [], "direct": []}
    loads: dict[str, list[float]] = {"tunnel": [], "direct": [], "ssh": []}
    prologue = f"echo \"{SCRIPT_MARK} $(date +%s.%N)\""
    try:
        empty_queue()
        pki = make_pki(workdir / "pki")
        broker = BrokerProcess(procs, pki, workdir / "broker", listen_host=HUB_SIDE, public_host=HUB_SIDE)
        hubs = {
            "tunnel": Hub(procs, workdir / "hub-tunnel", broker, backend="real-slurm", hub_ip=HUB_SIDE,
                          log_level="DEBUG", req_prologue=prologue),
            "direct": Hub(procs, workdir / "hub-direct", broker, backend="real-slurm", hub_ip=HUB_SIDE,
                          log_level="DEBUG",
                          hub_config=(*DIRECT_CONFIG, f"c.DirectSlurmSpawner.req_prologue = {prologue!r}")),
        }
        sshd = start_sshd(procs, workdir)
        users = {"tunnel": "btstart1", "direct": "btstart2"}
        tokens = {}
        for variant, user in users.items():
            ensure_user(user)
            hubs[variant].api("POST", f"/hub/api/users/{user}")
            tokens[variant] = user_token(hubs[variant], user)
        with chromium_browser(ROOT / "artifacts" / "start-time") as browser:
            for r in range(args.rounds):
                for variant in ("tunnel", "direct"):
                    cluster("firewall", "open" if variant == "direct" else "default")
                    hub, user = hubs[variant], users[variant]
                    clean_home(user)
                    runs[variant].append(spawn_once(hub, user, tokens[variant]))
                    loads[variant].append(page_load(browser, hub, user))
                    if variant == "direct":
                        loads["ssh"].append(page_load_through_ssh(browser, hub, user, procs, sshd))
                    print(f"round {r + 1} {variant}: " + ", ".join(
                        f"{k} {v * 1000:.0f}" for k, v in sorted(runs[variant][-1].items(), key=lambda kv: kv[1]))
                        + f" ms; browser page load {loads[variant][-1] * 1000:.0f} ms", flush=True)
                    stop(hub, user)
    finally:
        if args.pin:
            pin_slurmd(all_cpus)  # the cluster outlives the bench
        subprocess.run([str(CLUSTER), "firewall", "default"], capture_output=True)
        procs.stop_all()
        subprocess.run(["scancel", "--partition=debug"], capture_output=True)
    report = {"runs": runs, "page_loads": loads}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "start_time.json").write_text(json.dumps(report, indent=2))
    table = render(runs, loads)
    print(table)
    if args.write_docs:
        write_docs(table, "start-time")


def render(runs: dict[str, list[dict[str, float]]], loads: dict[str, list[float]]) -> str:
    """Two tables: ms since the spawn request, then ms since the job's script began on the node (the
    scheduler's own timing, 0.1-1.1 s here, varies more than anything the tunnel does)."""

    def cell(values: list[float]) -> str:
        if not values:
            return "-"
        ms = [v * 1000 for v in values]
        return f"{statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f})"

    def column(variant: str, key: str, since: str | None) -> list[float]:
        return [r[key] - (r[since] if since else 0.0) for r in runs[variant] if key in r and (not since or since in r)]

    rounds = len(runs["tunnel"])
    lines = [run_line(f"real Slurm (scripts/slurm-cluster.sh), {rounds} spawns per path, alternating; "
                      f"median (min-max) of the spawns.")]
    for since, title, keys in ((None, "ms since the spawn request", [k for k, _ in PHASES]),
                               ("script", "ms since the job's script began on the node",
                                [k for k, _ in PHASES if k not in ("submitted", "running", "script")])):
        lines += ["", f"| phase, {title} | through the tunnel | direct (node firewall open) | "
                      f"tunnel minus direct, medians |", "|---|---|---|---|"]
        for key, name in PHASES:
            if key not in keys:
                continue
            t, d = column("tunnel", key, since), column("direct", key, since)
            diff = f"{(statistics.median(t) - statistics.median(d)) * 1000:+.0f}" if t and d else "-"
            lines.append(f"| {name} | {cell(t)} | {cell(d)} | {diff} |")
    extra = (statistics.median(loads["tunnel"]) - statistics.median(loads["direct"])) * 1000
    ssh = cell(loads.get("ssh", []))
    lines += ["", "| browser, logged in, server running | through the tunnel | direct | through ssh -L (aes128-gcm) "
                  "| tunnel minus direct |",
              "|---|---|---|---|---|",
              f"| JupyterLab page load, ms (navigation to main area drawn) | {cell(loads['tunnel'])} | "
              f"{cell(loads['direct'])} | {ssh} | {extra:+.0f} |"]
    return "\n".join(lines)


def rerender() -> str:
    """The table again from bench/results/start_time.json (after a change to this function)."""
    report = json.loads((ROOT / "bench" / "results" / "start_time.json").read_text())
    return render(report["runs"], report["page_loads"])


if __name__ == "__main__":
    main()
