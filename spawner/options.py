"""The spawn options form: cores, memory, runtime, GPUs, partition and environment, within admin limits.

Every value a user sends, from the form or through the REST API (``user_options``),
goes through :func:`validate` before it can reach a batch script: numbers must be
plain integers within the configured range, partitions and environments must be
one of the configured names. What reaches the script is ours: canonical numbers,
an admin's partition name, an admin's environment prologue.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Dict, Integer, List, TraitError, Unicode, default
from traitlets import validate as trait_validate
from traitlets.config import Configurable

from ..wire import OptionsError


@dataclass(frozen=True)
class Limits:
    cores_max: int = 8
    memory_max_gb: int = 32
    runtime_max_minutes: int = 480
    gpus_max: int = 0
    partitions: list[str] = field(default_factory=list)
    environments: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # name -> regular expression the value must match


@dataclass(frozen=True)
class Choice:
    """Validated options, in canonical units."""

    cores: int
    memory_gb: int
    runtime_minutes: int
    gpus: int
    partition: str
    environment: str
    extra: dict[str, str] = field(default_factory=dict)  # the admin's extra options the user set


NUMBERS = {
    "cores": ("cores_max", 1, "CPU cores"),
    "memory_gb": ("memory_max_gb", 1, "GB of memory"),
    "runtime_minutes": ("runtime_max_minutes", 1, "minutes of runtime"),
    "gpus": ("gpus_max", 0, "GPUs"),
}
NAMES = {"partition": "partitions", "environment": "environments"}
FALLBACK = {"cores": 1, "memory_gb": 2, "runtime_minutes": 60, "gpus": 0}
RESERVED = {*NUMBERS, *NAMES, "nprocs", "memory", "runtime", "ngpus", "gres", "queue", "cmd", "username",
            "homedir", "keepvars", "keepvars_extra", "prologue", "epilogue", "options", "srun", "host"}
"""Names an extra option may not take: the form's own fields, and batchspawner's template variables
that carry commands or the script's frame (``options`` is a free-form line of batch directives)."""
EXTRA_MAX = 128


def validate(raw: dict[str, Any] | None, limits: Limits) -> Choice:
    """Check ``raw`` (form fields or user_options) against ``limits``.

    Raises:
        OptionsError: naming every bad field, e.g. "cores: 64 is more than the 16 allowed".
    """
    raw = dict(raw or {})
    known = {*NUMBERS, *NAMES, *limits.extra}
    unknown = sorted(set(raw) - known, key=str)
    problems = [f"unknown option {str(key)[:40]!r}" for key in unknown[:10]]  # the message stays short
    if len(unknown) > 10:
        problems.append(f"{len(unknown) - 10} more unknown options")
    values: dict[str, Any] = {}
    for key, (limit_name, low, unit) in NUMBERS.items():
        high = getattr(limits, limit_name)
        value = raw.get(key, limits.defaults.get(key, min(FALLBACK[key], high)))
        number = _integer(value)
        if number is None:
            problems.append(f"{key}: {str(value)[:40]!r} is not a whole number")
        elif number < low:
            problems.append(f"{key}: at least {low} {unit}")
        elif number > high:
            problems.append(f"{key}: {number} is more than the {high} {unit} allowed")
        else:
            values[key] = number
    for key, limit_name in NAMES.items():
        allowed = list(getattr(limits, limit_name))
        default_value = limits.defaults.get(key, allowed[0] if allowed else "")
        value = raw.get(key, default_value)
        if not allowed:
            if value not in ("", None):
                problems.append(f"{key}: no {key} can be chosen here")
            values[key] = ""
        elif not isinstance(value, str) or value not in allowed:
            problems.append(f"{key}: {str(value)[:40]!r} is not one of: {', '.join(allowed)}")
        else:
            values[key] = value
    extra: dict[str, str] = {}
    for key, pattern in limits.extra.items():
        value = raw.get(key, limits.defaults.get(key, ""))
        if value in ("", None):
            continue
        if not isinstance(value, str) or len(value) > EXTRA_MAX or not value.isprintable():
            problems.append(f"{key}: {str(value)[:40]!r} is not a line of at most {EXTRA_MAX} printable characters")
        elif not re.fullmatch(pattern, value):
            problems.append(f"{key}: {value[:40]!r} is not allowed here")
        else:
            extra[key] = value
    if problems:
        raise OptionsError("Invalid spawn options: " + "; ".join(problems))
    return Choice(**values, extra=extra)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 7:
        return int(value.strip())
    return None


class ResourceOptionsMixin(Configurable):
    """Adds the options form and its validation to a spawner (used by the tunnel spawners)."""

    options_enabled = Bool(True, help="Show the spawn options form. False: req_* values only.").tag(config=True)
    options_cores_max = Integer(8, help="Most CPU cores a user may ask for.").tag(config=True)
    options_memory_max_gb = Integer(32, help="Most memory a user may ask for, in GB.").tag(config=True)
    options_runtime_max_minutes = Integer(480, help="Longest runtime a user may ask for, in minutes.").tag(
        config=True)
    options_gpus_max = Integer(0, help="Most GPUs a user may ask for; 0 hides the field.").tag(config=True)
    options_partitions = List(
        Unicode(), [],
        help="Partitions (Slurm) or queues (PBS, LSF, ...) a user may choose from; the first is the "
             "default. Empty: the field is hidden and req_partition/req_queue apply.",
    ).tag(config=True)
    options_environments = Dict(
        value_trait=Unicode(), default_value={},
        help="""
        Named software environments: name -> shell lines run in the job before the notebook starts
        (e.g. {"Python 3.12": "module load python/3.12"}). Users choose a name; only these lines,
        written by the admin, reach the batch script. Empty: the field is hidden.
        """,
    ).tag(config=True)
    options_defaults = Dict(
        help='Initial values of the form, e.g. {"cores": 2, "memory_gb": 4, "runtime_minutes": 120}.',
    ).tag(config=True)
    options_extra = Dict(
        value_trait=Unicode(), default_value={},
        help="""
        Further options a user may set, on the form (a text field each) or through the REST API:
        name -> a regular expression the whole value must match, e.g.
        ``{"account": r"[a-z][a-z0-9_]{0,31}", "reservation": r"maint|training"}``. A value that matches
        (one printable line, at most 128 characters, whatever the expression) becomes the batch
        script's template variable of that name (``{{account}}``; batchspawner's Slurm script uses
        ``{{reservation}}``, add the lines for the others to batch_script); an empty one leaves the
        admin's req_* value. Names of the form's own fields and of batchspawner's command-carrying
        variables (cmd, options, prologue, epilogue, srun, ...) are refused. Every other option a
        user sends is refused with the form on, and ignored with it off. The hub matches these
        expressions against what users send: keep them simple (no nested repetition such as
        ``(a+)+``, which Python's re can take exponential time on).
        """,
    ).tag(config=True)

    @trait_validate("options_extra")
    def _check_extra(self, proposal: dict[str, Any]) -> dict[str, str]:
        extra: dict[str, str] = proposal["value"]
        for name, pattern in extra.items():
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,31}", name) or name in RESERVED:
                raise TraitError(f"options_extra: {name!r} cannot be an extra option (reserved or not a plain name)")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise TraitError(f"options_extra: the expression for {name!r} does not compile: {exc}") from None
        return extra

    @default("apply_user_options")
    def _apply_user_options_default(self) -> Any:
        return check_user_options

    def option_limits(self) -> Limits:
        """The form's limits and starting values. The admin's batchspawner settings (req_nprocs,
        req_memory, req_runtime, req_ngpus, req_partition/req_queue) are the starting values where
        options_defaults does not say otherwise, and always within the limits."""
        admin = self.admin_defaults()
        return Limits(max(self.options_cores_max, admin.get("cores", 0)),
                      max(self.options_memory_max_gb, admin.get("memory_gb", 0)),
                      max(self.options_runtime_max_minutes, admin.get("runtime_minutes", 0)),
                      self.options_gpus_max, list(self.options_partitions), dict(self.options_environments),
                      {**admin, **self.options_defaults}, dict(self.options_extra))

    def admin_defaults(self) -> dict[str, Any]:
        """The admin's req_* settings in the form's units, for those that parse (and a partition only
        if the form offers it)."""
        found: dict[str, Any] = {}
        parsed = {"cores": _integer(getattr(self, "req_nprocs", "")),
                  "memory_gb": memory_gb(getattr(self, "req_memory", "")),
                  "runtime_minutes": runtime_minutes(getattr(self, "req_runtime", "")),
                  "gpus": _integer(getattr(self, "req_ngpus", "")) if self.options_gpus_max else None}
        found.update({key: value for key, value in parsed.items() if value})
        partition = getattr(self, "req_partition", "") or getattr(self, "req_queue", "")
        if partition in self.options_partitions:
            found["partition"] = partition
        return found

    @default("options_form")
    def _options_form_default(self) -> str:
        return self.render_options_form() if self.options_enabled else ""

    def render_options_form(self) -> str:
        limits = self.option_limits()
        choice = validate({}, limits)
        rows = [
            _number("cores", "CPU cores", choice.cores, 1, limits.cores_max),
            _number("memory_gb", "Memory (GB)", choice.memory_gb, 1, limits.memory_max_gb),
            _number("runtime_minutes", "Runtime (minutes)", choice.runtime_minutes, 1, limits.runtime_max_minutes),
        ]
        if limits.gpus_max:
            rows.append(_number("gpus", "GPUs", choice.gpus, 0, limits.gpus_max))
        if limits.partitions:
            rows.append(_select("partition", "Partition", limits.partitions, choice.partition))
        if limits.environments:
            rows.append(_select("environment", "Environment", list(limits.environments), choice.environment))
        rows += [_text(name, choice.extra.get(name, "")) for name in limits.extra]
        return "\n".join(rows)

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        fields = {*NUMBERS, *NAMES, *self.options_extra}
        raw = {key: values[0] for key, values in formdata.items() if values and key in fields}
        choice = validate(raw, self.option_limits())  # an error is shown on the form
        options = dict(choice.__dict__)
        options.update(options.pop("extra"))
        return options

    def validated_options(self) -> dict[str, Any]:
        """Template variables for the batch script from the (validated) user options."""
        if not self.options_enabled:
            return {}
        choice = validate(getattr(self, "user_options", None), self.option_limits())
        return self.format_resources(choice)

    def format_resources(self, choice: Choice) -> dict[str, Any]:
        """batchspawner template variables (Slurm spelling; other backends override).

        A value equal to what the admin configured (req_*) leaves the admin's own spelling in place,
        and a field the form does not show (GPUs when options_gpus_max is 0) changes nothing: the
        form never blanks or rewrites what the admin set, e.g. a req_gres or req_memory = "512M"."""
        hours, minutes = divmod(choice.runtime_minutes, 60)
        variables: dict[str, Any] = {
            "nprocs": str(choice.cores),
            "memory": f"{choice.memory_gb}G",
            "runtime": f"{hours:02d}:{minutes:02d}:00",
        }
        if self.options_gpus_max:
            variables["ngpus"] = str(choice.gpus) if choice.gpus else ""
            variables["gres"] = f"gpu:{choice.gpus}" if choice.gpus else ""
        variables.update(choice.extra)
        admin = self.admin_defaults()
        for key, variable in (("cores", "nprocs"), ("memory_gb", "memory"), ("runtime_minutes", "runtime")):
            if key in admin and admin[key] == getattr(choice, key):
                del variables[variable]
        if choice.partition:
            variables["partition"] = variables["queue"] = choice.partition
        if choice.environment:
            prologue = self.options_environments[choice.environment]
            existing = getattr(self, "req_prologue", "")
            variables["prologue"] = f"{existing}\n{prologue}" if existing else prologue
        return variables


def check_user_options(spawner: Any, user_options: dict[str, Any]) -> None:
    """JupyterHub's apply_user_options hook (5.3+): check the options when the spawn is asked for, so
    that a bad one fails it at once with its reason (and JupyterHub does not log them as unhandled).
    They reach the batch script at submission, checked again there. With the form off, none apply."""
    from tornado import web

    if not spawner.options_enabled:
        if user_options:
            names = sorted(str(key)[:40] for key in user_options)  # the user's: bounded in the log
            spawner.log.info("Spawn options for %s ignored (the options form is off): %s%s", spawner.user.name,
                             ", ".join(names[:10]), f" and {len(names) - 10} more" if len(names) > 10 else "")
        return
    try:
        validate(user_options, spawner.option_limits())
    except OptionsError as exc:
        error = web.HTTPError(400, str(exc))
        error.jupyterhub_message = str(exc)  # type: ignore[attr-defined]  # what the spawn page shows
        raise error from None


def memory_gb(text: str) -> int | None:
    """A batch system's memory size ("4G", "4gb", "4000M", "4096MB", "2T"; no unit: MB, as Slurm
    reads it) in whole GB, rounded up; None if it does not parse."""
    text = str(text).strip().upper().removesuffix("B")
    scale = {"K": 1 / 1024 / 1024, "M": 1 / 1024, "G": 1, "T": 1024}
    unit = text[-1:] if text[-1:] in scale else "M"
    number = _integer(text[:-1] if text[-1:] in scale else text)
    if not number:
        return None
    return max(1, -int(-number * scale[unit] // 1))


def runtime_minutes(text: str) -> int | None:
    """A batch system's runtime ("MM", "HH:MM:SS", "D-HH:MM:SS", "D-HH") in whole minutes, rounded
    up; None if it does not parse."""
    text = str(text).strip()
    days, _, clock = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = clock.split(":")
    numbers = [_integer(p) for p in [days, *parts]]
    if not text or any(n is None for n in numbers) or len(parts) > 3:
        return None
    d, *rest = [n or 0 for n in numbers]
    if "-" in text:  # D-HH, D-HH:MM, D-HH:MM:SS
        rest += [0] * (3 - len(rest))
        hours, minutes, seconds = rest
    elif len(rest) == 1:  # MM
        hours, minutes, seconds = 0, rest[0], 0
    elif len(rest) == 2:  # MM:SS
        hours, minutes, seconds = 0, rest[0], rest[1]
    else:
        hours, minutes, seconds = rest
    total = d * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    return total or None


def _number(name: str, label: str, value: int, low: int, high: int) -> str:
    return (f'<div class="form-group"><label for="bt-{name}">{html.escape(label)} (max {high})</label>'
            f'<input class="form-control" type="number" id="bt-{name}" name="{name}" value="{value}" '
            f'min="{low}" max="{high}" step="1" required></div>')


def _text(name: str, value: str) -> str:
    label = name.replace("_", " ").capitalize() + " (optional)"
    return (f'<div class="form-group"><label for="bt-{name}">{html.escape(label)}</label>'
            f'<input class="form-control" type="text" id="bt-{name}" name="{name}" '
            f'value="{html.escape(value, quote=True)}" maxlength="{EXTRA_MAX}"></div>')


def _select(name: str, label: str, choices: list[str], selected: str) -> str:
    options = "".join(
        f'<option value="{html.escape(c, quote=True)}"{" selected" if c == selected else ""}>{html.escape(c)}</option>'
        for c in choices)
    return (f'<div class="form-group"><label for="bt-{name}">{html.escape(label)}</label>'
            f'<select class="form-control" id="bt-{name}" name="{name}">{options}</select></div>')
