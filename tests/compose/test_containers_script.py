"""scripts/containers.sh keeps podman's API service usable when the checkout that started it is gone.

conmon, which the service starts for every container, fails once the service's working directory has
been deleted ("write child: broken pipe" for the container), as a test run's fresh clone would be. The
script runs the service from its own state directory, and replaces one that runs from elsewhere. Each
test gets a state directory (and so an API socket) of its own; images are podman's, shared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import ROOT
from tests.support.processes import wait_until

pytestmark = [
    pytest.mark.compose,
    pytest.mark.skipif(os.geteuid() != 0, reason="podman as root (scripts/containers.sh)"),
]

SCRIPT = ROOT / "scripts" / "containers.sh"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "state"
    yield directory
    subprocess.run([str(SCRIPT), "down"], env={**os.environ, "BT_CONTAINERS_DIR": str(directory)},
                   capture_output=True, timeout=60)


def up(state: Path, cwd: Path) -> dict[str, str]:
    """``containers.sh up`` run from ``cwd``: the environment it prints, as docker-compose would get it."""
    done = subprocess.run([str(SCRIPT), "up"], cwd=cwd, env={**os.environ, "BT_CONTAINERS_DIR": str(state)},
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    env = dict(os.environ)
    for part in done.stdout.replace("\n", ";").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and not name.startswith("export"):
            env[name] = value
    return env


def service_cwd(state: Path) -> str:
    return os.readlink(f"/proc/{(state / 'podman-service.pid').read_text().strip()}/cwd")


def run_container(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One container through the API socket (the Docker-compatible path docker-compose takes)."""
    return subprocess.run(["podman", "--url", env["DOCKER_HOST"], "run", "--rm", "--network", "none",
                           "docker.io/library/debian:bookworm-slim", "echo", "container ran"],
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_service_runs_from_its_state_directory_and_outlives_the_callers_checkout(
        state: Path, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env = up(state, checkout)
    assert service_cwd(state) == str(state)
    shutil.rmtree(checkout)
    done = run_container(env)
    assert done.returncode == 0 and "container ran" in done.stdout, done.stderr


def test_a_service_started_from_a_deleted_directory_is_replaced(state: Path, tmp_path: Path) -> None:
    env = up(state, tmp_path)
    socket_path = env["DOCKER_HOST"].removeprefix("unix://")
    # What the script did before: the service started from the caller's directory, then that is deleted.
    subprocess.run([str(SCRIPT), "down"], env={**os.environ, "BT_CONTAINERS_DIR": str(state)}, check=True)
    wait_until(lambda: not answers(socket_path), 30, "the first service to stop")
    gone = tmp_path / "old-checkout"
    gone.mkdir()
    service = subprocess.Popen(["setsid", "podman", "system", "service", "--time=0", env["DOCKER_HOST"]],
                               cwd=gone, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        (state / "podman-service.pid").write_text(f"{service.pid}\n")
        wait_until(lambda: answers(socket_path), 30, "the old-style service's socket")
        shutil.rmtree(gone)
        env = up(state, tmp_path)
        service.wait(timeout=30)  # stopped by the script
        assert (state / "podman-service.pid").read_text().strip() != str(service.pid)
        assert service_cwd(state) == str(state)
        done = run_container(env)
        assert done.returncode == 0 and "container ran" in done.stdout, done.stderr
    finally:
        if service.poll() is None:
            service.kill()


def answers(socket_path: str) -> bool:
    return subprocess.run(["curl", "-sf", "--unix-socket", socket_path, "http://d/_ping"],
                          capture_output=True, timeout=10).returncode == 0
