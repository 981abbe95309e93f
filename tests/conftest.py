"""Fixtures shared by every test that runs real processes."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ProcessGroup
from tests.support.tunnel import BrokerProcess, Pki, make_pki


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect reference cycles after every test, so that a finalizer's warning (an unclosed
    socket, say) fails the test that left the object behind, not whichever test runs when the
    collector happens to pass."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def procs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ProcessGroup]:
    """Processes of one test; their logs are printed if the test fails."""
    group = ProcessGroup(tmp_path)
    yield group
    group.stop_all()
    _report(request, group)


@pytest.fixture
def broker(procs: ProcessGroup, pki: Pki, tmp_path: Path) -> BrokerProcess:
    """A broker of one test: TLS, free loopback ports, its own SQLite file."""
    return BrokerProcess(procs, pki, tmp_path)


@pytest.fixture(scope="module")
def module_procs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path_factory.mktemp("procs"))
    yield group
    group.stop_all()


def _report(request: pytest.FixtureRequest, group: ProcessGroup) -> None:
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for proc in group.procs:
            print(f"\n----- {proc.name} (pid {proc.pid}) log tail -----\n{proc.log()[-4000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
