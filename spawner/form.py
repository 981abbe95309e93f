"""The spawn options form: a Jinja2 template (Bootstrap 5, as JupyterHub 5/6 pages) that a site may
replace, the admin's named profiles with their limits and defaults, and the options' way from the
form (or the REST API) through ``options.validate`` into the batch script's variables."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader, select_autoescape
from traitlets import Bool, Callable, Dict, Integer, List, TraitError, Unicode, Union, default
from traitlets import validate as trait_validate
from traitlets.config import Configurable

from ..wire import ConfigurationError, OptionsError
from .options import (
    EXTRA_MAX,
    NAMES,
    NUMBERS,
    OPTIONAL,
    RESERVED,
    Choice,
    Limits,
    memory_gb,
    runtime_minutes,
    validate,
)
from .options import _integer as integer

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "options_form.html"
PROFILE_KEYS = {"slug", "display_name", "description", "default", "limits", "defaults"}
PROFILE_LIMITS = {"cores_max", "memory_max_gb", "runtime_max_minutes", "gpus_max", "partitions", "environments"}
LABELS = {"cores": "CPU cores", "memory_gb": "Memory (GB)", "runtime_minutes": "Runtime (minutes)", "gpus": "GPUs",
          "partition": "Partition", "environment": "Environment", "account": "Account", "qos": "QoS",
          "reservation": "Reservation"}


@functools.lru_cache(maxsize=8)
def _environment(paths: tuple[str, ...]) -> Environment:
    """Templates from the site's folders first, then ours (also as ``batchtunnel/options_form.html``,
    for a site template that extends ours and overrides a block)."""
    ours = FileSystemLoader(str(TEMPLATES))
    loader = ChoiceLoader([FileSystemLoader(list(paths)), PrefixLoader({"batchtunnel": ours}), ours])
    return Environment(loader=loader, autoescape=select_autoescape(default=True, default_for_string=True))


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
    options_accounts = Union(
        [List(Unicode()), Callable()], default_value=[],
        help="""
        Accounts a user may charge the job to (Slurm's --account; for other backends add ``{{account}}``
        to batch_script), or a function ``f(spawner) -> list`` giving a user's own (e.g. from
        ``sacctmgr``). The field is optional: left empty, the admin's req_account or the scheduler's
        default applies. Empty list: the field is hidden.
        """,
    ).tag(config=True)
    options_qos = Union(
        [List(Unicode()), Callable()], default_value=[],
        help="Quality-of-service levels a user may choose (Slurm's --qos), as options_accounts.",
    ).tag(config=True)
    options_reservations = Union(
        [List(Unicode()), Callable()], default_value=[],
        help="Reservations a user may submit into (Slurm's --reservation), as options_accounts.",
    ).tag(config=True)
    options_profiles = List(
        Dict(), [],
        help="""
        Named profiles the user picks first, each with its own limits and starting values, e.g.
        ``[{"slug": "small", "display_name": "Small", "description": "2 cores, 4 GB, 2 hours",
        "limits": {"cores_max": 2, "memory_max_gb": 4, "runtime_max_minutes": 120}},
        {"slug": "gpu", "display_name": "GPU", "default": True, "limits": {"gpus_max": 2,
        "partitions": ["gpu"]}, "defaults": {"gpus": 1}}]``. ``limits`` may set cores_max,
        memory_max_gb, runtime_max_minutes, gpus_max, partitions and environments (a subset of
        options_environments' names); what a profile leaves out is the options_* setting. The first
        profile, or the one with ``"default": True``, is preselected. The chosen profile's slug is
        the ``profile`` option and the batch script's ``{{profile}}``. Empty: no profiles.
        """,
    ).tag(config=True)
    options_form_template = Unicode(
        "",
        help="""
        The site's own Jinja2 template for the form, as text (e.g. ``open("/etc/jupyterhub/form.html").read()``),
        instead of batchtunnel's ``options_form.html``. It may ``{% extends "batchtunnel/options_form.html" %}``
        and override a block (profiles, resources, choices, extra, script). Its variables are listed in
        batchtunnel's template. Empty: options_form_template_paths, then batchtunnel's.
        """,
    ).tag(config=True)
    options_form_template_paths = List(
        Unicode(), [],
        help="Folders searched for options_form.html before batchtunnel's own, like kubespawner's "
             "additional_profile_form_template_paths.",
    ).tag(config=True)
    options_extra = Dict(
        value_trait=Unicode(), default_value={},
        help="""
        Further options a user may set, on the form (a text field each) or through the REST API:
        name -> a regular expression the whole value must match, e.g.
        ``{"project": r"[a-z][a-z0-9_]{0,31}", "constraint": r"haswell|skylake"}``. A value that matches
        (one printable line, at most 128 characters, whatever the expression) becomes the batch
        script's template variable of that name (``{{project}}``; add the lines that use it to
        batch_script); an empty one leaves the admin's req_* value. Names of the form's own fields and
        of batchspawner's command-carrying variables (cmd, options, prologue, epilogue, srun, ...) are
        refused. Every other option a user sends is refused with the form on, and ignored with it off.
        The hub matches these expressions against what users send: keep them simple (no nested
        repetition such as ``(a+)+``, which Python's re can take exponential time on).
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

    @trait_validate("options_profiles")
    def _check_profiles(self, proposal: dict[str, Any]) -> list[dict[str, Any]]:
        profiles: list[dict[str, Any]] = proposal["value"]
        slugs = [str(p.get("slug", "")) for p in profiles]
        for profile, slug in zip(profiles, slugs, strict=True):
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", slug):
                raise TraitError(f"options_profiles: {slug!r} is not a slug (lower-case letters, digits, - and _)")
            unknown = (set(profile) - PROFILE_KEYS) | (set(profile.get("limits", {})) - PROFILE_LIMITS)
            if unknown:
                raise TraitError(f"options_profiles: profile {slug!r} has unknown keys: {', '.join(sorted(unknown))}")
            for key, value in profile.get("limits", {}).items():
                number = integer(value)
                if key not in ("partitions", "environments") and (number is None or number < 0):
                    raise TraitError(f"options_profiles: {slug}.limits.{key} must be a whole number")
        if len(set(slugs)) != len(slugs):
            raise TraitError("options_profiles: two profiles have the same slug")
        if sum(1 for p in profiles if p.get("default")) > 1:
            raise TraitError("options_profiles: more than one profile says default")
        return profiles

    @default("apply_user_options")
    def _apply_user_options_default(self) -> Any:
        return check_user_options

    # -- limits

    def option_limits(self, raw: dict[str, Any] | None = None) -> Limits:
        """The limits and starting values for ``raw``'s profile (the default profile's without one).
        The admin's batchspawner settings (req_nprocs, req_memory, req_runtime, req_ngpus,
        req_partition/req_queue) are the starting values where options_defaults does not say
        otherwise, and always within the limits."""
        base = self.base_limits()
        profiles = self.profile_limits(base)
        if not profiles:
            return base
        slug = (raw or {}).get("profile") or self.default_profile()
        if slug not in profiles:
            raise OptionsError(f"Invalid spawn options: profile: {str(slug)[:40]!r} is not one of: "
                               f"{', '.join(profiles)}")
        return profiles[slug]

    def base_limits(self) -> Limits:
        admin = self.admin_defaults()
        choices = {}
        for key, trait in (("account", "options_accounts"), ("qos", "options_qos"),
                           ("reservation", "options_reservations")):
            allowed = getattr(self, trait)
            allowed = list(allowed(self) if callable(allowed) else allowed)
            if allowed:
                if key in self.options_extra:
                    raise ConfigurationError(f"{trait} and options_extra both offer {key!r}: keep one")
                choices[key] = [str(a) for a in allowed]
        return Limits(max(self.options_cores_max, admin.get("cores", 0)),
                      max(self.options_memory_max_gb, admin.get("memory_gb", 0)),
                      max(self.options_runtime_max_minutes, admin.get("runtime_minutes", 0)),
                      self.options_gpus_max, list(self.options_partitions), dict(self.options_environments),
                      {**admin, **self.options_defaults}, dict(self.options_extra), choices)

    def profile_limits(self, base: Limits | None = None) -> dict[str, Limits]:
        """slug -> the profile's limits: the base limits (given, or computed here: the account and
        the like may come from a site's function) with the profile's own over them."""
        base = base or self.base_limits()
        found: dict[str, Limits] = {}
        for profile in self.options_profiles:
            own = dict(profile.get("limits", {}))
            environments = base.environments
            if "environments" in own:
                names = set(own.pop("environments"))
                if not names <= set(base.environments):
                    raise ConfigurationError(f"options_profiles: {profile['slug']} names environments that "
                                             f"options_environments does not have: {sorted(names - set(environments))}")
                environments = {k: v for k, v in base.environments.items() if k in names}
            numbers = {key: int(own[key]) for key in ("cores_max", "memory_max_gb", "runtime_max_minutes", "gpus_max")
                       if key in own}
            partitions = list(own.get("partitions", base.partitions))
            defaults = {**base.defaults, **profile.get("defaults", {})}
            if defaults.get("partition") not in partitions:
                defaults.pop("partition", None)
            found[profile["slug"]] = Limits(
                numbers.get("cores_max", base.cores_max), numbers.get("memory_max_gb", base.memory_max_gb),
                numbers.get("runtime_max_minutes", base.runtime_max_minutes), numbers.get("gpus_max", base.gpus_max),
                partitions, environments, defaults, base.extra, base.choices, profile["slug"])
        return found

    def default_profile(self) -> str:
        marked = [p["slug"] for p in self.options_profiles if p.get("default")]
        return str(marked[0] if marked else self.options_profiles[0]["slug"]) if self.options_profiles else ""

    def admin_defaults(self) -> dict[str, Any]:
        """The admin's req_* settings in the form's units, for those that parse (and a partition only
        if the form offers it)."""
        found: dict[str, Any] = {}
        parsed = {"cores": integer(getattr(self, "req_nprocs", "")),
                  "memory_gb": memory_gb(getattr(self, "req_memory", "")),
                  "runtime_minutes": runtime_minutes(getattr(self, "req_runtime", "")),
                  "gpus": integer(getattr(self, "req_ngpus", "")) if self.options_gpus_max else None}
        found.update({key: value for key, value in parsed.items() if value})
        partition = getattr(self, "req_partition", "") or getattr(self, "req_queue", "")
        if partition in self.options_partitions:
            found["partition"] = partition
        return found

    def check_options(self, raw: dict[str, Any] | None) -> Choice:
        """``raw`` checked against its profile's limits (OptionsError names every problem)."""
        return validate(raw, self.option_limits(raw))

    # -- the form

    @default("options_form")
    def _options_form_default(self) -> str:
        return self.render_options_form() if self.options_enabled else ""

    def render_options_form(self) -> str:
        environment = _environment(tuple(self.options_form_template_paths))
        if self.options_form_template:
            template = environment.from_string(self.options_form_template)
        else:
            template = environment.get_template(TEMPLATE)
        return template.render(**self.form_context())

    def form_context(self) -> dict[str, Any]:
        """The template's variables (documented at the top of templates/options_form.html)."""
        base = self.base_limits()  # once: options_accounts and the like may run a command
        profiles = self.profile_limits(base) or {"": base}
        starting = {slug: validate({}, limits) for slug, limits in profiles.items()}
        selected = self.default_profile()
        # GPUs only where some profile offers them; the other numbers always.
        shown = {key: key != "gpus" or any(limits.gpus_max for limits in profiles.values()) for key in NUMBERS}
        described = {p["slug"]: p for p in self.options_profiles}
        entries = []
        for slug, limits in profiles.items():
            choice = starting[slug]
            fields = {key: {"value": getattr(choice, key), "max": getattr(limits, NUMBERS[key][0]),
                            "min": NUMBERS[key][1]} for key in NUMBERS}
            fields["partition"] = {"value": choice.partition, "choices": limits.partitions}
            fields["environment"] = {"value": choice.environment, "choices": list(limits.environments)}
            entries.append({"slug": slug, "display_name": described.get(slug, {}).get("display_name", slug),
                            "description": described.get(slug, {}).get("description", ""),
                            "selected": slug == selected, "fields": fields})
        current = next((e for e in entries if e["selected"]), entries[0])
        first = starting[current["slug"]]
        return {
            "profiles": entries if self.options_profiles else [],
            "current": current,
            "numbers": [{"name": key, "label": LABELS[key], **current["fields"][key]} for key in NUMBERS
                        if shown[key]],
            "selects": [{"name": key, "label": LABELS[key], **current["fields"][key]} for key in NAMES
                        if any(e["fields"][key]["choices"] for e in entries)],
            "optional": [{"name": key, "label": LABELS[key], "choices": base.choices[key],
                          "value": first.chosen.get(key, "")} for key in OPTIONAL if key in base.choices],
            "extra": [{"name": name, "label": name.replace("_", " ").capitalize(), "value": first.extra.get(name, ""),
                       "maxlength": EXTRA_MAX} for name in base.extra],
            "user": getattr(getattr(self, "user", None), "name", ""),
        }

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        fields = {*NUMBERS, *NAMES, *OPTIONAL, *self.options_extra, "profile"}
        raw = {key: values[0] for key, values in formdata.items() if values and key in fields}
        choice = self.check_options(raw)  # an error is shown on the form
        options: dict[str, Any] = {key: getattr(choice, key) for key in (*NUMBERS, *NAMES)}
        options.update(choice.chosen)
        options.update(choice.extra)
        if choice.profile:
            options["profile"] = choice.profile
        return options

    def validated_options(self) -> dict[str, Any]:
        """Template variables for the batch script from the (validated) user options."""
        if not self.options_enabled:
            return {}
        return self.format_resources(self.check_options(getattr(self, "user_options", None)))

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
        if choice.gpus_offered:
            variables["ngpus"] = str(choice.gpus) if choice.gpus else ""
            variables["gres"] = f"gpu:{choice.gpus}" if choice.gpus else ""
        variables.update(choice.chosen)
        variables.update(choice.extra)
        if choice.profile:
            variables["profile"] = choice.profile
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
        spawner.check_options(user_options)
    except OptionsError as exc:
        error = web.HTTPError(400, str(exc))
        error.jupyterhub_message = str(exc)  # type: ignore[attr-defined]  # what the spawn page shows
        raise error from None
