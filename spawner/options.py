"""Checking spawn options: cores, memory, runtime, GPUs, partition, environment, account, QoS,
reservation and the admin's extra options, within the limits of the chosen profile.

Every value a user sends, from the form or through the REST API (``user_options``),
goes through :func:`validate` before it can reach a batch script: numbers must be
plain integers within the configured range, names must be one of the configured ones.
What reaches the script is ours: canonical numbers, an admin's names, an admin's
environment prologue. The form itself is ``form.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

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
    choices: dict[str, list[str]] = field(default_factory=dict)  # account/qos/reservation -> allowed; "" too
    profile: str = ""  # the slug of the profile these limits are, if the admin named profiles


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
    chosen: dict[str, str] = field(default_factory=dict)  # account/qos/reservation, when not left empty
    profile: str = ""
    gpus_offered: bool = field(default=False, compare=False)  # the limits let the user choose GPUs


NUMBERS = {
    "cores": ("cores_max", 1, "CPU cores"),
    "memory_gb": ("memory_max_gb", 1, "GB of memory"),
    "runtime_minutes": ("runtime_max_minutes", 1, "minutes of runtime"),
    "gpus": ("gpus_max", 0, "GPUs"),
}
NAMES = {"partition": "partitions", "environment": "environments"}
OPTIONAL = ("account", "qos", "reservation")
"""Names a user may leave empty (the admin's req_* value, or the scheduler's default)."""
FALLBACK = {"cores": 1, "memory_gb": 2, "runtime_minutes": 60, "gpus": 0}
RESERVED = {*NUMBERS, *NAMES, "profile", "nprocs", "memory", "runtime", "ngpus", "gres", "queue", "cmd", "username",
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
    known = {*NUMBERS, *NAMES, *limits.extra, *limits.choices, *(["profile"] if limits.profile else [])}
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
    chosen: dict[str, str] = {}
    for key, allowed in limits.choices.items():
        value = raw.get(key, limits.defaults.get(key, ""))
        if value in ("", None):
            continue
        if not isinstance(value, str) or value not in allowed:
            problems.append(f"{key}: {str(value)[:40]!r} is not one of: {', '.join(allowed)}")
        else:
            chosen[key] = value
    if limits.profile and raw.get("profile", limits.profile) != limits.profile:
        problems.append(f"profile: {str(raw.get('profile'))[:40]!r} is not the profile these limits are for")
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
    return Choice(**values, extra=extra, chosen=chosen, profile=limits.profile, gpus_offered=limits.gpus_max > 0)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 7:
        return int(value.strip())
    return None


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
