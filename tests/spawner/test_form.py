"""The options form as a template: named profiles with their own limits and starting values, the
optional account/QoS/reservation fields, and a site's own template (text, or a folder, extending ours)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from batchspawner.batchspawner import format_template
from batchtunnel.spawner import SlurmTunnelSpawner, TorqueTunnelSpawner
from batchtunnel.wire import ConfigurationError, OptionsError
from traitlets import TraitError

PROFILES = [
    {"slug": "small", "display_name": "Small", "description": "2 cores, 4 GB, 2 hours",
     "limits": {"cores_max": 2, "memory_max_gb": 4, "runtime_max_minutes": 120, "partitions": ["cpu"]}},
    {"slug": "gpu", "display_name": "GPU <fast>", "default": True,
     "limits": {"gpus_max": 2, "partitions": ["gpu", "gpu-long"], "environments": ["Py"]},
     "defaults": {"gpus": 1, "cores": 4}},
]


def spawner(cls: type = SlurmTunnelSpawner, **config: Any) -> Any:
    settings = {"req_keepvars": "PATH", "options_partitions": ["cpu", "gpu", "gpu-long"],
                "options_environments": {"Py": "module load py", "R": "module load r"}, **config}
    return cls(user=SimpleNamespace(name="root"), **settings)


def test_each_profile_has_its_own_limits_and_starting_values() -> None:
    s = spawner(options_profiles=PROFILES)
    assert s.check_options({}).profile == "gpu"  # the one marked default
    gpu = s.check_options({"profile": "gpu", "cores": "6"})
    assert (gpu.cores, gpu.gpus, gpu.partition, gpu.environment) == (6, 1, "gpu", "Py")
    small = s.check_options({"profile": "small"})
    assert (small.cores, small.gpus, small.partition) == (1, 0, "cpu")
    for raw, message in (({"profile": "small", "cores": "4"}, "cores: 4 is more than the 2 CPU cores allowed"),
                         ({"profile": "small", "gpus": "1"}, "gpus: 1 is more than the 0 GPUs allowed"),
                         ({"profile": "small", "partition": "gpu"}, "partition: 'gpu' is not one of: cpu"),
                         ({"profile": "gpu", "environment": "R"}, "environment: 'R' is not one of: Py"),
                         ({"profile": "huge"}, "profile: 'huge' is not one of: small, gpu")):
        with pytest.raises(OptionsError, match=re.escape(message)):
            s.check_options(raw)
    s.user_options = {"profile": "gpu", "gpus": 2, "partition": "gpu-long"}
    variables = s.validated_options()
    assert variables["gres"] == "gpu:2" and variables["partition"] == "gpu-long" and variables["profile"] == "gpu"
    assert variables["prologue"] == "module load py"


def test_the_form_lists_the_profiles_and_carries_each_ones_fields_for_the_page() -> None:
    form = spawner(options_profiles=PROFILES).options_form
    assert 'name="profile" id="bt-profile-small" value="small"' in form
    assert re.search(r'id="bt-profile-gpu" value="gpu"\s+checked', form)
    assert "GPU &lt;fast&gt;" in form and "<fast>" not in form.split('id="bt-profiles-data"')[0]
    assert 'id="bt-gpus"' in form and 'class="form-select"' in form and 'class="form-label"' in form  # Bootstrap 5
    assert 'id="bt-cores" name="cores" value="4"' in form  # the gpu profile's starting values
    data = json.loads(re.search(r'id="bt-profiles-data">(.*?)</script>', form, re.S).group(1))  # type: ignore[union-attr]
    small = next(p for p in data if p["slug"] == "small")
    assert small["fields"]["cores"] == {"value": 1, "max": 2, "min": 1}
    assert small["fields"]["partition"] == {"value": "cpu", "choices": ["cpu"]}
    assert small["display_name"] == "Small" and data[1]["display_name"] == "GPU <fast>"
    form_data = {"profile": ["small"], "cores": ["2"], "memory_gb": ["3"], "runtime_minutes": ["60"],
                 "partition": ["cpu"]}
    assert spawner(options_profiles=PROFILES).options_from_form(form_data)["profile"] == "small"


def test_without_profiles_the_form_is_as_before() -> None:
    form = spawner().options_form
    assert 'name="profile"' not in form and "bt-profiles-data" not in form and 'id="bt-gpus"' not in form
    assert spawner().check_options({}).profile == ""
    with pytest.raises(OptionsError, match="unknown option 'profile'"):
        spawner().check_options({"profile": "small"})


def test_account_qos_and_reservation_are_optional_choices_that_reach_the_slurm_script() -> None:
    s = spawner(options_accounts=lambda sp: [f"{sp.user.name}-lab", "physics"], options_qos=["normal", "high"],
                options_reservations=["training"])
    form = s.options_form
    assert 'id="bt-account"' in form and '<option value="root-lab">' in form and '<option value="">default' in form
    assert s.check_options({}).chosen == {}  # left empty: the admin's req_* and the scheduler decide
    s.user_options = {"account": "physics", "qos": "high", "reservation": "training"}
    variables = s.validated_options()
    script = format_template(s.batch_script, **{**s.get_req_subvars(), **variables, "cmd": "run"})
    assert "#SBATCH --account=physics\n#SBATCH --qos=high\n#SBATCH --reservation=training\n" in script
    for raw, message in (({"account": "chemistry"}, "account: 'chemistry' is not one of: root-lab, physics"),
                         ({"qos": ["high"]}, "qos: \"['high']\" is not one of")):
        with pytest.raises(OptionsError, match=re.escape(message)):
            s.check_options(raw)
    plain = spawner()
    plain.user_options = {}
    script = format_template(plain.batch_script, **{**plain.get_req_subvars(), **plain.validated_options(),
                                                    "cmd": "run"})
    assert "--account" not in script and "--qos" not in script
    with pytest.raises(ConfigurationError, match="options_accounts and options_extra both offer 'account'"):
        spawner(options_accounts=["a"], options_extra={"account": "a"}).check_options({})


def test_other_backends_get_the_variables_for_their_own_lines() -> None:
    s = spawner(TorqueTunnelSpawner, options_accounts=["physics"],
                batch_script="#PBS -A {account}\n{cmd}\n")
    s.user_options = {"account": "physics"}
    assert format_template(s.batch_script, **{**s.validated_options(), "cmd": "run"}) == "#PBS -A physics\nrun\n"


def test_a_site_template_as_text_or_folder_may_extend_ours(tmp_path: Path) -> None:
    own = spawner(options_form_template="<p>Hello {{ user }}: {% for f in numbers %}{{ f.name }}={{ f.max }} "
                                        "{% endfor %}</p>").options_form
    assert own == "<p>Hello root: cores=8 memory_gb=32 runtime_minutes=480 </p>"
    (tmp_path / "options_form.html").write_text(
        '{% extends "batchtunnel/options_form.html" %}{% block extra %}<div class="alert alert-info">'
        "Jobs over 8 hours need a reservation.</div>{{ super() }}{% endblock %}")
    extended = spawner(options_form_template_paths=[str(tmp_path)], options_extra={"project": "[a-z]+"}).options_form
    assert "Jobs over 8 hours need a reservation." in extended and 'id="bt-cores"' in extended
    assert 'id="bt-project"' in extended  # the block's own content, through super()


@pytest.mark.parametrize("profiles, message", [
    ([{"slug": "Big One"}], "'Big One' is not a slug"),
    ([{"slug": "a"}, {"slug": "a"}], "two profiles have the same slug"),
    ([{"slug": "a", "limits": {"cores": 4}}], "profile 'a' has unknown keys: cores"),
    ([{"slug": "a", "colour": "red"}], "profile 'a' has unknown keys: colour"),
    ([{"slug": "a", "limits": {"cores_max": "many"}}], "a.limits.cores_max must be a whole number"),
    ([{"slug": "a", "default": True}, {"slug": "b", "default": True}], "more than one profile says default"),
])
def test_bad_profiles_are_refused_at_configuration(profiles: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(TraitError, match=re.escape(message)):
        spawner(options_profiles=profiles)


def test_a_profile_naming_an_unknown_environment_is_a_configuration_error() -> None:
    s = spawner(options_profiles=[{"slug": "a", "limits": {"environments": ["Julia"]}}])
    with pytest.raises(ConfigurationError, match="names environments that options_environments does not have"):
        s.check_options({})


def test_grid_engine_gets_its_resources_on_its_one_directives_line() -> None:
    from batchtunnel.spawner import GridEngineTunnelSpawner

    s = spawner(GridEngineTunnelSpawner, parallel_environment="smp", req_options="-P physics")
    s.user_options = {"cores": 2, "memory_gb": 4, "runtime_minutes": 90, "partition": "gpu"}
    assert s.validated_options()["options"] == "-P physics -l h_rt=01:30:00 -l mem_free=4G -pe smp 2 -q gpu"
    plain = spawner(GridEngineTunnelSpawner, options_partitions=[])
    plain.user_options = {"cores": 2}
    assert "-pe" not in plain.validated_options()["options"]  # no parallel environment: no cores request


def test_a_sites_account_function_runs_once_per_form_and_once_per_check() -> None:
    calls = []

    def accounts(sp: Any) -> list[str]:  # a site's would run sacctmgr: not three times per spawn
        calls.append(1)
        return ["physics"]

    s = spawner(options_accounts=accounts, options_profiles=PROFILES)
    assert 'id="bt-account"' in s.render_options_form() and len(calls) == 1
    s.user_options = {"profile": "gpu", "account": "physics"}
    assert s.validated_options()["account"] == "physics" and len(calls) == 2
