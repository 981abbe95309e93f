"""The options form in Chromium on a real JupyterHub (batch system: the stand-in): picking a profile
changes the fields' limits and starting values in the page, and what the user chose reaches the batch
script. Screenshots in artifacts/form/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.browser import Shots, chromium_browser, log_in
from tests.support.hub import CHP, ROOT, Hub, ensure_user
from tests.support.processes import ProcessGroup, wait_until
from tests.support.tunnel import BrokerProcess, Pki

pytestmark = [
    pytest.mark.skipif(not CHP.exists(), reason="needs configurable-http-proxy (scripts/test.sh installs it)"),
    pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (scripts/test.sh installs it)"),
]

ARTIFACTS = ROOT / "artifacts" / "form"
USER = "btform"
PROFILES = [
    {"slug": "small", "display_name": "Small", "description": "Up to 2 cores and 4 GB, for 2 hours at most",
     "limits": {"cores_max": 2, "memory_max_gb": 4, "runtime_max_minutes": 120, "partitions": ["cpu"]}},
    {"slug": "gpu", "display_name": "GPU", "description": "Up to 2 GPUs on the gpu partitions", "default": True,
     "limits": {"gpus_max": 2, "partitions": ["gpu", "gpu-long"]}, "defaults": {"gpus": 1, "cores": 4}},
]


def test_a_profile_sets_the_fields_and_the_choice_reaches_the_script(procs: ProcessGroup, pki: Pki,
                                                                      tmp_path: Path) -> None:
    from playwright.sync_api import expect

    broker = BrokerProcess(procs, pki, tmp_path / "broker")
    hub = Hub(procs, tmp_path / "hub", broker, options_profiles=PROFILES,
              options_partitions=["cpu", "gpu", "gpu-long"], options_accounts=["physics", "chemistry"],
              options_qos=["normal", "high"], options_reservations=["training"])
    ensure_user(USER)
    shot = Shots(ARTIFACTS)
    with chromium_browser(ARTIFACTS) as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(30_000)
        log_in(page, hub.port, USER, next_path="/hub/spawn")

        page.wait_for_selector("#bt-profiles")
        expect(page.locator("#bt-profile-gpu")).to_be_checked()
        assert page.get_attribute("#bt-cores", "max") == "8" and page.input_value("#bt-cores") == "4"
        assert page.input_value("#bt-gpus") == "1"
        assert page.locator("#bt-partition option").all_inner_texts() == ["gpu", "gpu-long"]
        shot(page, "profile-gpu")

        page.click("label[for=bt-profile-small]")
        expect(page.locator("#bt-cores")).to_have_attribute("max", "2")
        assert page.get_attribute("#bt-gpus", "max") == "0" and page.input_value("#bt-gpus") == "0"
        expect(page.locator("#bt-gpus")).to_be_hidden()
        assert page.locator("#bt-partition option").all_inner_texts() == ["cpu"]
        expect(page.locator("#bt-memory_gb-help")).to_contain_text("1 to 4")
        page.fill("#bt-cores", "2")
        page.fill("#bt-memory_gb", "3")
        page.select_option("#bt-account", "physics")
        page.select_option("#bt-qos", "high")
        shot(page, "profile-small")
        page.click("form#spawn_form button[type=submit], form#spawn_form input[type=submit]")
        expect(page.locator("#progress-log")).to_contain_text("running on", timeout=60_000)
        shot(page, "progress")
    (job,) = wait_until(hub.jobs_running, 30, "the job to start")
    script = (hub.batch_dir / f"{job}.sh").read_text()
    for line in ("--partition=cpu", "--cpus-per-task=2", "--mem=3G", "--account=physics", "--qos=high"):
        assert f"#SBATCH {line}\n" in script, script
    assert "--reservation" not in script and "--gres" not in script
    # JupyterHub refuses to stop a server whose spawn is still pending (500, "pending spawn"): the spawn
    # goes on after the job runs, until the notebook answers.
    events = hub.progress(USER)
    assert events and events[-1].get("ready"), events
    status, _ = hub.api("DELETE", f"/hub/api/users/{USER}/server")
    assert status in (202, 204)
    wait_until(lambda: not hub.jobs_running(), 30, "the job to be cancelled")
