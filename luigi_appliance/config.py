"""Scheduler configuration: files, drop-ins, strict validation, effective settings.

The main file (``/etc/luigi-appliance/scheduler.conf`` unless ``--config`` or
``LUIGI_APPLIANCE_CONFIG`` says otherwise) is read first, then ``<main>.d/*.conf`` in lexical
order; a later file overrides an earlier one key by key. Every problem found is reported at once,
each naming file, line, section and key.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luigi_appliance.errors import ConfigError, ConfigIssue, SecretError
from luigi_appliance.inifile import Entry, IniDocument, read_files
from luigi_appliance.secret_values import ENC_PREFIX, decrypt_value, read_secret_file, secret_file_problem

DEFAULT_CONFIG = Path("/etc/luigi-appliance/scheduler.conf")
CONFIG_ENV = "LUIGI_APPLIANCE_CONFIG"
DEFAULT_PORT = 8082

# Options of luigi's [scheduler] section that we manage ourselves: passing them through would
# bypass the signed state store or the non-blocking history.
_MANAGED_SCHEDULER_KEYS = {
    "state_path": "the appliance keeps state under [state] dir, signed; remove this key",
    "record_task_history": "luigi's own task history writes synchronously on the scheduler's only thread; "
                           "the appliance's non-blocking history is not available yet; remove this key",
}


# Sections whose keys are not in SCHEMA: luigi's scheduler options (checked against luigi's own
# parameters) and resource limits (any name, a non-negative integer each).
_FREEFORM_SECTIONS = ("scheduler", "resources")


# ---------------------------------------------------------------------------------------------
# Value parsers: each raises ValueError whose text says what was expected.

def parse_bool(value: str) -> bool:
    low = value.lower()
    if low in ("true", "yes", "on", "1"):
        return True
    if low in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected an integer between {lo} and {hi}, got {value!r}") from None
        if not lo <= number <= hi:
            raise ValueError(f"expected an integer between {lo} and {hi}, got {number}")
        return number
    return parse


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str) -> float:
    """Seconds from ``30``, ``30s``, ``5m``, ``2h`` or ``90d``."""
    m = _DURATION.match(value.strip().lower())
    if not m:
        raise ValueError(f"expected a duration such as 30, 30s, 5m, 2h or 90d, got {value!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def duration_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        seconds = parse_duration(value)
        if not lo <= seconds <= hi:
            raise ValueError(f"expected a duration between {lo:g}s and {hi:g}s, got {seconds:g}s")
        return seconds
    return parse


def choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        low = value.lower()
        if low not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return low
    return parse


def parse_path(value: str) -> Path:
    if not value:
        raise ValueError("expected a path, got an empty value")
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"expected an absolute path, got {value!r}")
    return path


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ListenAddress:
    """Where the scheduler listens: a TCP host and port, or a unix socket path."""

    host: str | None = None
    port: int | None = None
    unix_path: Path | None = None

    def is_local(self) -> bool:
        """True for a unix socket or a loopback address (where plain HTTP may be allowed)."""
        return self.unix_path is not None or is_loopback_host(self.host or "")

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(value: str) -> ListenAddress:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:/absolute/path``."""
    if value.startswith("unix:"):
        return ListenAddress(unix_path=parse_path(value[len("unix:"):]))
    m = re.match(r"^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$", value)
    if not m:
        raise ValueError(f"expected HOST:PORT, [IPV6]:PORT or unix:/path, got {value!r}")
    port = int(m.group(3))
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port between 1 and 65535, got {port}")
    return ListenAddress(host=m.group(1) or m.group(2), port=port)


# ---------------------------------------------------------------------------------------------
# The schema: every key a sysadmin may write, with its parser and default.

@dataclass(frozen=True)
class Key:
    """One configuration key.

    ``secret`` keys are never accepted in clear: give ``<name>_file = PATH`` (a file readable by
    root and the service account only) or ``<name> = enc:...``.
    ``must_exist`` paths are checked when the configuration is loaded to serve.
    """

    parse: Callable[[str], Any]
    default: Any
    secret: bool = False
    must_exist: bool = False


SCHEMA: dict[str, dict[str, Key]] = {
    "server": {
        "listen": Key(parse_listen, ListenAddress("127.0.0.1", DEFAULT_PORT)),
        "insecure_http": Key(parse_bool, False),
        "max_body_bytes": Key(int_range(1024, 256 * 1024 * 1024), 2 * 1024 * 1024),
        "hsts_max_age": Key(int_range(0, 2 * 365 * 86400), 365 * 86400),
    },
    "tls": {
        "cert_file": Key(parse_path, None, must_exist=True),
        "key_file": Key(parse_path, None, must_exist=True),
        "ca_file": Key(parse_path, None, must_exist=True),
        "min_version": Key(choice("1.2", "1.3"), "1.2"),
    },
    "state": {
        "dir": Key(parse_path, Path("/var/lib/luigi-appliance")),
        "snapshot_interval": Key(duration_range(1, 3600), 30.0),
        "hmac_key": Key(str, None, secret=True),
    },
    "auth": {
        "backend": Key(choice("local"), "local"),
        "users_file": Key(parse_path, Path("/etc/luigi-appliance/users"), must_exist=True),
        "cache_ttl": Key(duration_range(0, 86400), 300.0),
    },
    "secrets": {
        "key_file": Key(parse_path, Path("/etc/luigi-appliance/secret.key")),
    },
    "logging": {
        "level": Key(choice("debug", "info", "warning", "error"), "info"),
        "format": Key(choice("auto", "journal", "text"), "auto"),
    },
}


# ---------------------------------------------------------------------------------------------
# Effective settings.

@dataclass(frozen=True)
class ServerSettings:
    listen: ListenAddress
    insecure_http: bool
    max_body_bytes: int
    hsts_max_age: int


@dataclass(frozen=True)
class TLSSettings:
    cert_file: Path | None
    key_file: Path | None
    ca_file: Path | None
    min_version: str


@dataclass(frozen=True)
class StateSettings:
    dir: Path
    snapshot_interval: float
    hmac_key_file: Path | None
    hmac_key: bytes | None = field(default=None, repr=False)

    @property
    def snapshot_path(self) -> Path:
        return self.dir / "state.pickle"

    @property
    def default_key_path(self) -> Path:
        return self.dir / "state.key"


@dataclass(frozen=True)
class AuthSettings:
    backend: str
    users_file: Path
    cache_ttl: float


@dataclass(frozen=True)
class LoggingSettings:
    level: str
    format: str


@dataclass(frozen=True)
class Settings:
    """Everything ``serve`` needs, validated."""

    server: ServerSettings
    tls: TLSSettings
    state: StateSettings
    auth: AuthSettings
    logging: LoggingSettings
    secrets_key_file: Path
    scheduler: dict[str, Any]
    resources: dict[str, int]
    files: list[str]
    # (section, key) -> (display value, origin) for ``config show``
    effective: dict[tuple[str, str], tuple[str, str]]


def config_paths(explicit: Path | None) -> list[Path]:
    """The main file and its drop-ins, in the order they are applied."""
    main = explicit or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else DEFAULT_CONFIG)
    dropin_dir = main.with_name(main.name + ".d")
    dropins = sorted(dropin_dir.glob("*.conf")) if dropin_dir.is_dir() else []
    return [main, *dropins]


class SchemaLoader:
    """Turns an IniDocument into values, collecting issues instead of stopping at the first."""

    def __init__(self, doc: IniDocument, issues: list[ConfigIssue], check_files: bool,
                 schema: dict[str, dict[str, Key]] = SCHEMA, freeform: tuple[str, ...] = _FREEFORM_SECTIONS):
        self.schema = schema
        self.freeform = freeform
        self.doc = doc
        self.issues = issues
        self.check_files = check_files
        self.values: dict[tuple[str, str], Any] = {}
        self.effective: dict[tuple[str, str], tuple[str, str]] = {}
        self.secret_key_file: Path = SCHEMA["secrets"]["key_file"].default

    def issue(self, entry: Entry | None, section: str, key: str | None, message: str) -> None:
        if entry is None:
            self.issues.append(ConfigIssue(self.doc.files[0] if self.doc.files else "<defaults>",
                                           None, section, key, message))
        else:
            self.issues.append(ConfigIssue(entry.file, entry.line, section, key, message))

    def load(self) -> None:
        self._check_unknown()
        # secrets.key_file first: enc: values elsewhere need it.
        for section in sorted(self.schema, key=lambda s: s != "secrets"):
            for name, key in self.schema[section].items():
                if key.secret:
                    self._load_secret(section, name)
                else:
                    self._load_plain(section, name, key)

    def _check_unknown(self) -> None:
        for section, (file, line) in self.doc.sections.items():
            if section not in self.schema and section not in self.freeform:
                known = ", ".join(sorted([*self.schema, *self.freeform]))
                self.issues.append(ConfigIssue(file, line, section, None,
                                               f"unknown section; expected one of {known}"))
        for (section, name), entry in self.doc.entries.items():
            if section not in self.schema:
                continue
            allowed = set()
            for key_name, key in self.schema[section].items():
                allowed.update({key_name, f"{key_name}_file"} if key.secret else {key_name})
            if name not in allowed:
                self.issue(entry, section, name,
                           f"unknown key; expected one of {', '.join(sorted(allowed))}")

    def _load_plain(self, section: str, name: str, key: Key) -> None:
        entry = self.doc.get(section, name)
        if entry is None:
            if key.must_exist and self.check_files and isinstance(key.default, Path) and not key.default.exists():
                self.issue(None, section, name, f"file {key.default} (the default) does not exist")
            self.values[(section, name)] = key.default
            self.effective[(section, name)] = (_display(key.default), "default")
            return
        try:
            value = key.parse(entry.value)
        except ValueError as exc:
            self.issue(entry, section, name, str(exc))
            return
        if key.must_exist and self.check_files and isinstance(value, Path) and not value.exists():
            self.issue(entry, section, name, f"file {value} does not exist")
        self.values[(section, name)] = value
        self.effective[(section, name)] = (_display(value), f"{entry.file}:{entry.line}")
        if (section, name) == ("secrets", "key_file"):
            self.secret_key_file = value

    def _load_secret(self, section: str, name: str) -> None:
        inline = self.doc.get(section, name)
        from_file = self.doc.get(section, f"{name}_file")
        self.values[(section, name)] = None
        self.values[(section, f"{name}_file")] = None
        if inline and from_file:
            self.issue(from_file, section, name, f"give either {name} or {name}_file, not both")
            return
        if inline:
            if not inline.value.startswith(ENC_PREFIX):
                self.issue(inline, section, name,
                           f"secrets are not accepted in clear; use {name}_file = PATH or an enc: "
                           "value from 'luigi-appliance secret encrypt'")
                return
            try:
                self.values[(section, name)] = decrypt_value(inline.value, self.secret_key_file).encode()
            except SecretError as exc:
                self.issue(inline, section, name, str(exc))
                return
            self.effective[(section, name)] = ("<redacted enc: value>", f"{inline.file}:{inline.line}")
        elif from_file:
            try:
                path = parse_path(from_file.value)
            except ValueError as exc:
                self.issue(from_file, section, f"{name}_file", str(exc))
                return
            problem = secret_file_problem(path) if self.check_files else None
            if problem:
                self.issue(from_file, section, f"{name}_file", problem)
                return
            self.values[(section, f"{name}_file")] = path
            self.effective[(section, f"{name}_file")] = (str(path), f"{from_file.file}:{from_file.line}")


def _display(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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
            known = ", ".join(sorted(k for k in params if k not in _MANAGED_SCHEDULER_KEYS))
            loader.issue(entry, "scheduler", entry.key, f"unknown luigi scheduler option; expected one of {known}")
            continue
        try:
            parsed[entry.key] = param.parse(entry.value)
        except (ValueError, TypeError, KeyError) as exc:
            kind = type(param).__name__.replace("Parameter", "").lower() or "string"
            loader.issue(entry, "scheduler", entry.key, f"expected a {kind} value for luigi: {exc}")
            continue
        loader.effective[("scheduler", entry.key)] = (entry.value, f"{entry.file}:{entry.line}")
    return parsed


def _load_resources_section(doc: IniDocument, loader: SchemaLoader) -> dict[str, int]:
    """[resources] name = amount, as luigi's own [resources] section."""
    resources: dict[str, int] = {}
    parse = int_range(0, 2**31 - 1)
    for entry in doc.in_section("resources"):
        try:
            resources[entry.key] = parse(entry.value)
        except ValueError as exc:
            loader.issue(entry, "resources", entry.key, str(exc))
            continue
        loader.effective[("resources", entry.key)] = (entry.value, f"{entry.file}:{entry.line}")
    return resources


def _cross_checks(loader: SchemaLoader) -> None:
    v = loader.values
    doc = loader.doc
    listen: ListenAddress | None = v.get(("server", "listen"))
    if v.get(("server", "insecure_http")) and listen is not None and not listen.is_local():
        loader.issue(doc.get("server", "insecure_http") or doc.get("server", "listen"), "server", "insecure_http",
                     f"plain HTTP is only allowed on a loopback address or a unix socket, not on {listen}")
    cert, key = v.get(("tls", "cert_file")), v.get(("tls", "key_file"))
    if (cert is None) != (key is None):
        present = doc.get("tls", "cert_file") or doc.get("tls", "key_file")
        loader.issue(present, "tls", "cert_file" if cert is None else "key_file",
                     "cert_file and key_file must be given together (or neither, for a self-signed certificate)")
    if key is not None and loader.check_files:
        problem = secret_file_problem(key)
        if problem and key.exists():
            loader.issue(doc.get("tls", "key_file"), "tls", "key_file", problem)


def load_settings(paths: list[Path], *, check_files: bool = True,
                  overrides: dict[tuple[str, str], str] | None = None) -> Settings:
    """Read, validate and return the settings; raise ConfigError listing every problem.

    ``overrides`` are applied as if written in a last drop-in named ``<command line>``.
    """
    issues: list[ConfigIssue] = []
    doc = read_files(paths, issues)
    for (section, name), value in (overrides or {}).items():
        doc.sections.setdefault(section, ("<command line>", 0))
        doc.entries[(section, name)] = Entry(section, name, value, "<command line>", 0)
    loader = SchemaLoader(doc, issues, check_files)
    loader.load()
    scheduler = _load_scheduler_section(doc, loader)
    resources = _load_resources_section(doc, loader)
    _cross_checks(loader)
    if issues:
        order = {name: i for i, name in enumerate(doc.files)}
        raise ConfigError(sorted(issues, key=lambda i: (order.get(i.file, len(order)), i.line or 0)))
    v = loader.values
    return Settings(
        server=ServerSettings(v[("server", "listen")], v[("server", "insecure_http")],
                              v[("server", "max_body_bytes")], v[("server", "hsts_max_age")]),
        tls=TLSSettings(v[("tls", "cert_file")], v[("tls", "key_file")], v[("tls", "ca_file")],
                        v[("tls", "min_version")]),
        state=StateSettings(v[("state", "dir")], v[("state", "snapshot_interval")],
                            v[("state", "hmac_key_file")], v[("state", "hmac_key")]),
        auth=AuthSettings(v[("auth", "backend")], v[("auth", "users_file")], v[("auth", "cache_ttl")]),
        logging=LoggingSettings(v[("logging", "level")], v[("logging", "format")]),
        secrets_key_file=v[("secrets", "key_file")],
        scheduler=scheduler,
        resources=resources,
        files=doc.files,
        effective=loader.effective,
    )


def render_effective(settings: Settings) -> str:
    """The effective configuration as INI text, each value annotated with where it came from."""
    lines: list[str] = []
    by_section: dict[str, list[tuple[str, str, str]]] = {}
    for (section, name), (value, origin) in sorted(settings.effective.items()):
        by_section.setdefault(section, []).append((name, value, origin))
    for section in [*SCHEMA, *_FREEFORM_SECTIONS]:
        rows = by_section.get(section)
        if not rows:
            continue
        lines.append(f"[{section}]")
        for name, value, origin in rows:
            lines.append(f"{name} = {value}    # {origin}")
        lines.append("")
    return "\n".join(lines)


def read_hmac_key(state: StateSettings) -> bytes | None:
    """The configured state HMAC key (from enc: or a key file), or None to use the default file."""
    if state.hmac_key is not None:
        return state.hmac_key
    if state.hmac_key_file is not None:
        return read_secret_file(state.hmac_key_file).strip()
    return None
