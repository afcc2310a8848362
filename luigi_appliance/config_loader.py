"""Reading scheduler.conf: files, drop-ins, strict validation, effective settings.

The main file (``/etc/luigi-appliance/scheduler.conf`` unless ``--config`` or
``LUIGI_APPLIANCE_CONFIG`` says otherwise) is read first, then ``<main>.d/*.conf`` in lexical
order; a later file overrides an earlier one key by key. Every problem found is reported at once,
each naming file, line, section and key. The sections are config.py's; ``config check``,
``config show`` and ``serve`` all load through ``load_settings``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from luigi_appliance.approvals.settings import APPROVAL, APPROVALS, ApprovalPolicy
from luigi_appliance.auth import registry
from luigi_appliance.auth.oidc.settings import OIDC
from luigi_appliance.auth.settings import AUTH, load_groups
from luigi_appliance.config import FREEFORM_SECTIONS, SECTION_FAMILIES, SECTIONS, Settings
from luigi_appliance.errors import ApplianceError, ConfigError
from luigi_appliance.secret_settings import SECRETS, SecretFiles
from luigi_appliance.server.startup_checks import startup_issues
from luigi_appliance.settings.inifile import Entry, IniDocument, read_files
from luigi_appliance.settings.issues import ConfigIssue
from luigi_appliance.settings.loader import SchemaLoader, unknown
from luigi_appliance.settings.parsers import int_range

DEFAULT_CONFIG = Path("/etc/luigi-appliance/scheduler.conf")
CONFIG_ENV = "LUIGI_APPLIANCE_CONFIG"

# Options of luigi's [scheduler] section that we manage ourselves: passing them through would
# bypass the signed state store or the non-blocking history.
_MANAGED_SCHEDULER_KEYS = {
    "state_path": "the appliance keeps state under [state] dir, signed; remove this key",
    "record_task_history": "luigi's own task history writes synchronously on the scheduler's only thread "
                           "and loses events when its database fails; configure the appliance's "
                           "non-blocking history in [history] instead (backend = postgresql); remove this key",
}


def config_paths(explicit: Path | None) -> list[Path]:
    """The main file and its drop-ins, in the order they are applied."""
    main = explicit or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else DEFAULT_CONFIG)
    dropin_dir = main.with_name(main.name + ".d")
    dropins = sorted(dropin_dir.glob("*.conf")) if dropin_dir.is_dir() else []
    return [main, *dropins]


def _check_backends(loader: SchemaLoader) -> None:
    """Every name in [auth] backend is an account backend of the registry; an unknown one leaves
    the key invalid, so the checks that depend on it are not run."""
    names = loader.values.get(("auth", "backend"))
    for name in names or ():
        try:
            registry.backend_factory(name)
        except (ApplianceError, ModuleNotFoundError) as exc:
            message = str(exc) if isinstance(exc, ApplianceError) else (
                f"the {name} backend needs the Python module {exc.name}, which is not installed")
            loader.issue(loader.doc.get("auth", "backend"), "auth", "backend", message)
            del loader.values[("auth", "backend")]
            del loader.effective[("auth", "backend")]
            return


def _load_scheduler_section(doc: IniDocument, loader: SchemaLoader) -> dict[str, Any]:
    """Validate luigi's own [scheduler] options against the keys luigi 3.8 knows."""
    from luigi.scheduler import scheduler as luigi_scheduler_config

    params = dict(luigi_scheduler_config.get_params())
    parsed: dict[str, Any] = {}
    for entry in doc.in_section("scheduler"):
        if entry.key in _MANAGED_SCHEDULER_KEYS:
            loader.issue(entry, "scheduler", entry.key, _MANAGED_SCHEDULER_KEYS[entry.key])
            continue
        param = params.get(entry.key)
        if param is None:
            known = [k for k in params if k not in _MANAGED_SCHEDULER_KEYS]
            loader.issue(entry, "scheduler", entry.key, unknown("luigi scheduler option", entry.key, known))
            continue
        try:
            parsed[entry.key] = param.parse(entry.value)
        except (ValueError, TypeError, KeyError) as exc:
            kind = type(param).__name__.replace("Parameter", "").lower() or "string"
            loader.issue(entry, "scheduler", entry.key, f"expected a {kind} value for luigi: {exc}")
            continue
        loader.effective[("scheduler", entry.key)] = (entry.value, f"{entry.file}:{entry.line}")
    return parsed


def load_settings(paths: list[Path], *, check_files: bool = True, for_serve: bool = False,
                  overrides: dict[tuple[str, str], str] | None = None) -> Settings:
    """Read, validate and return the settings; raise ConfigError listing every problem.

    ``check_files``: the files the settings name exist, and secret files are private.
    ``for_serve``: then everything ``serve`` would refuse at start (server/startup_checks.py),
    found without creating anything; this is the one validation of ``config check`` and
    ``serve``. ``overrides`` are applied as if written in a last drop-in named ``<command line>``.
    """
    issues: list[ConfigIssue] = []
    doc = read_files(paths, issues)
    for (section, name), value in (overrides or {}).items():
        doc.sections.setdefault(section, ("<command line>", 0))
        doc.entries[(section, name)] = Entry(section, name, value, "<command line>", 0)
    loader = SchemaLoader(doc, issues, check_files, SECTIONS, FREEFORM_SECTIONS,
                          secrets=SecretFiles(), key_file=("secrets", "key_file"), families=SECTION_FAMILIES)
    loader.load()
    _check_backends(loader)
    scheduler = _load_scheduler_section(doc, loader)
    resources = loader.load_freeform("resources", int_range(0, 2**31 - 1))
    roles, families = load_groups(loader)
    loader.check()
    if issues:
        raise _config_error(doc, issues)
    # Each section's dataclass is the Settings field of its name; [secrets] gives only its key file.
    built = {s.name: s.build(loader) for s in SECTIONS if s.name not in ("auth", "secrets", "approvals")}
    settings = Settings(
        **built,
        auth=AUTH.build(loader, roles=roles, families=families),
        secrets_key_file=SECRETS.build(loader).key_file,
        oidc=OIDC.build(loader),
        approvals=ApprovalPolicy(APPROVALS.build(loader), APPROVAL.build(loader)),
        scheduler=scheduler,
        resources=resources,
        files=doc.files,
        effective=loader.effective,
    )
    if for_serve:
        issues = startup_issues(settings, doc)
        if issues:
            raise _config_error(doc, issues)
    return settings


def _config_error(doc: IniDocument, issues: list[ConfigIssue]) -> ConfigError:
    """The issues in the order of the files, then of the lines."""
    order = {name: i for i, name in enumerate(doc.files)}
    return ConfigError(sorted(issues, key=lambda i: (order.get(i.file, len(order)), i.line or 0)))
