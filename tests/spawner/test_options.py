"""Spawn options: every field validated against admin limits; nothing raw reaches a batch script."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from batchtunnel.spawner import SlurmTunnelSpawner, TorqueTunnelSpawner
from batchtunnel.spawner.options import Choice, Limits, validate
from batchtunnel.wire import OptionsError

LIMITS = Limits(cores_max=16, memory_max_gb=64, runtime_max_minutes=600, gpus_max=2,
                partitions=["cpu", "gpu"], environments={"Python 3.12": "module load python/3.12"})


def test_defaults_when_nothing_is_chosen() -> None:
    assert validate({}, LIMITS) == Choice(1, 2, 60, 0, "cpu", "Python 3.12")
    assert validate(None, Limits(defaults={"cores": 4})).cores == 4


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"cores": "16", "memory_gb": 64, "runtime_minutes": " 600 ", "gpus": "2", "partition": "gpu"},
         Choice(16, 64, 600, 2, "gpu", "Python 3.12")),
        ({"cores": 1, "gpus": 0}, Choice(1, 2, 60, 0, "cpu", "Python 3.12")),
    ],
)
def test_valid_values(raw: dict[str, Any], expected: Choice) -> None:
    assert validate(raw, LIMITS) == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"cores": "17"}, "cores: 17 is more than the 16 CPU cores allowed"),
        ({"cores": "0"}, "cores: at least 1 CPU cores"),
        ({"cores": "-1"}, "cores: '-1' is not a whole number"),
        ({"cores": "1.5"}, "cores: '1.5' is not a whole number"),
        ({"cores": True}, "cores: 'True' is not a whole number"),
        ({"cores": "1e9"}, "is not a whole number"),
        ({"memory_gb": "65"}, "memory_gb: 65 is more than the 64 GB of memory allowed"),
        ({"memory_gb": "4G; rm -rf ~"}, "memory_gb: '4G; rm -rf ~' is not a whole number"),
        ({"runtime_minutes": "601"}, "runtime_minutes: 601 is more than the 600 minutes of runtime allowed"),
        ({"runtime_minutes": "99999999999"}, "is not a whole number"),
        ({"gpus": "3"}, "gpus: 3 is more than the 2 GPUs allowed"),
        ({"partition": "gpu\n#SBATCH --uid=0"}, "partition: 'gpu\\n#SBATCH --uid=0' is not one of: cpu, gpu"),
        ({"partition": ["cpu"]}, "is not one of"),
        ({"environment": "$(id)"}, "environment: '$(id)' is not one of: Python 3.12"),
        ({"batch_cancel_cmd": "touch /tmp/x"}, "unknown option 'batch_cancel_cmd'"),
    ],
)
def test_bad_values_are_refused_with_a_message(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError) as exc:
        validate(raw, LIMITS)
    assert message in str(exc.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(OptionsError) as exc:
        validate({"cores": "99", "gpus": "9", "partition": "x"}, LIMITS)
    assert str(exc.value).count(";") == 2


def test_fields_the_admin_did_not_offer_cannot_be_set() -> None:
    with pytest.raises(OptionsError, match="gpus: 1 is more than the 0 GPUs"):
        validate({"gpus": 1}, Limits())
    with pytest.raises(OptionsError, match="no partition can be chosen"):
        validate({"partition": "gpu"}, Limits())


def spawner(cls: type = SlurmTunnelSpawner, **config: Any) -> Any:
    settings = {"options_partitions": ["cpu", "gpu"], "options_gpus_max": 2,
                "options_environments": {"Py": "module load py"}, **config}
    return cls(user=SimpleNamespace(name="root"), **settings)


def test_form_shows_only_offered_fields_and_escapes_names() -> None:
    form = spawner(options_environments={"<b>x</b>": "true"}).options_form
    assert 'name="gpus"' in form and 'max="2"' in form and 'name="partition"' in form
    assert "<b>x</b>" not in form and "&lt;b&gt;x&lt;/b&gt;" in form
    assert 'name="gpus"' not in SlurmTunnelSpawner(user=SimpleNamespace(name="root")).options_form


def test_form_data_and_batch_variables() -> None:
    s = spawner()
    s.user_options = s.options_from_form({"cores": ["4"], "memory_gb": ["8"], "runtime_minutes": ["90"],
                                          "gpus": ["1"], "partition": ["gpu"], "environment": ["Py"]})
    assert s.validated_options() == {
        "nprocs": "4", "memory": "8G", "runtime": "01:30:00", "ngpus": "1", "gres": "gpu:1",
        "partition": "gpu", "queue": "gpu", "prologue": "module load py",
    }
    torque = spawner(TorqueTunnelSpawner)
    torque.user_options = {"memory_gb": 8}
    assert torque.validated_options()["memory"] == "8gb"
    with pytest.raises(OptionsError):
        s.options_from_form({"cores": ["400"]})


@pytest.mark.parametrize("text, gb", [("4G", 4), ("4gb", 4), ("4000M", 4), ("4096MB", 4), ("512M", 1), ("2T", 2048),
                                      ("8000", 8), ("", None), ("lots", None), ("-4G", None)])
def test_memory_sizes_as_batch_systems_write_them(text: str, gb: int | None) -> None:
    from batchtunnel.spawner.options import memory_gb

    assert memory_gb(text) == gb


@pytest.mark.parametrize("text, minutes", [("90", 90), ("01:30:00", 90), ("1-00:00:00", 1440), ("2-12", 3600),
                                           ("00:00:30", 1), ("10:30", 11), ("", None), ("1:2:3:4", None),
                                           ("soon", None)])
def test_runtimes_as_batch_systems_write_them(text: str, minutes: int | None) -> None:
    from batchtunnel.spawner.options import runtime_minutes

    assert runtime_minutes(text) == minutes


def test_the_admins_req_settings_are_the_forms_defaults_and_are_never_blanked() -> None:
    """batchspawner's contract: an admin's req_* are the starting point; a user who changes nothing
    gets exactly what the admin configured (a req_gres the form does not show included)."""
    admin = {"req_nprocs": "4", "req_memory": "512M", "req_runtime": "02:00:00", "req_gres": "gpu:a100:1",
             "req_partition": "gpu", "options_gpus_max": 0, "options_environments": {}}
    s = spawner(**admin)
    form = s.options_form
    assert 'id="bt-cores" name="cores" value="4"' in form and 'value="gpu" selected' in form
    s.user_options = s.options_from_form({})  # the form, sent unchanged
    assert s.validated_options() == {"partition": "gpu", "queue": "gpu"}
    # batchspawner fills the script's variables from req_* first; nothing above replaces them.
    assert (s.req_nprocs, s.req_memory, s.req_runtime, s.req_gres) == ("4", "512M", "02:00:00", "gpu:a100:1")
    s.user_options = {}  # through the REST API without options
    assert "memory" not in s.validated_options()
    # A change is the user's: it replaces the admin's value, within limits that include it.
    s.user_options = s.options_from_form({"cores": ["2"], "memory_gb": ["3"]})
    assert s.validated_options()["nprocs"] == "2" and s.validated_options()["memory"] == "3G"
    big = spawner(req_nprocs="32", options_cores_max=8)
    assert big.option_limits().cores_max == 32
    torque = spawner(TorqueTunnelSpawner, req_memory="8gb")
    torque.user_options = {}
    assert "memory" not in torque.validated_options()


def test_extra_options_declared_by_the_admin_are_validated_and_reach_the_script() -> None:
    s = spawner(options_extra={"account": r"[a-z][a-z0-9_]{0,31}", "reservation": "maint|training"})
    form = s.options_form
    assert 'name="account"' in form and 'name="reservation"' in form
    s.user_options = s.options_from_form({"cores": ["2"], "account": ["physics_1"], "reservation": [""]})
    variables = s.validated_options()
    assert variables["account"] == "physics_1" and "reservation" not in variables  # empty: the admin's req_*
    for bad, message in (({"account": "Physics"}, "account: 'Physics' is not allowed here"),
                         ({"account": "a\n#SBATCH --uid=0"}, "is not a line of at most 128 printable"),
                         ({"reservation": "maint; rm"}, "reservation: 'maint; rm' is not allowed"),
                         ({"qos": "high"}, "unknown option 'qos'"),
                         ({"account": ["x"]}, "is not a line")):
        s.user_options = bad
        with pytest.raises(OptionsError, match=re.escape(message)):
            s.validated_options()


@pytest.mark.parametrize("extra, message", [({"options": ".*"}, "'options' cannot be an extra option"),
                                            ({"cmd": ".*"}, "'cmd' cannot"), ({"Bad-Name": ".*"}, "not a plain name"),
                                            ({"account": "("}, "does not compile")])
def test_extra_options_that_would_reach_commands_are_refused_at_configuration(
        extra: dict[str, str], message: str) -> None:
    from traitlets import TraitError

    with pytest.raises(TraitError, match=re.escape(message)):
        spawner(options_extra=extra)
