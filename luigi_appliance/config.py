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
from luigi_appliance.history.settings import (
    BACKENDS,
    SPOOL_FULL_POLICIES,
    SSLMODES,
    HistorySettings,
    default_sslmode,
    parse_db_host,
    parse_identifier,
    size_range,
)
from luigi_appliance.hosts import is_loopback_host
from luigi_appliance.inifile import Entry, IniDocument, read_files
from luigi_appliance.secret_values import ENC_PREFIX, decrypt_value, read_secret_file, secret_file_problem

DEFAULT_CONFIG = Path("/etc/luigi-appliance/scheduler.conf")
CONFIG_ENV = "LUIGI_APPLIANCE_CONFIG"
DEFAULT_PORT = 8082

# Options of luigi's [scheduler] section that we manage ourselves: passing them through would
# bypass the signed state store or the non-blocking history.
_MANAGED_SCHEDULER_KEYS = {
    "state_path": "the appliance keeps state under [state] dir, signed; remove this key",
    "record_task_history": "luigi's own task history writes synchronously on the scheduler's only thread "
                           "and loses events when its database fails; configure the appliance's "
                           "non-blocking history in [history] instead (backend = postgresql); remove this key",
}


# Sections whose keys are not in SCHEMA: luigi's scheduler options (checked against luigi's own
# parameters) and resource limits (any name, a non-negative integer each).
_FREEFORM_SECTIONS = ("scheduler", "resources", "roles", "families")


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


_LDAP_URI = re.compile(r"^(ldaps?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?/?$")


def parse_ldap_uris(value: str) -> tuple[str, ...]:
    """One or more ``ldap://HOST[:PORT]`` / ``ldaps://HOST[:PORT]``, separated by blanks or commas."""
    uris = tuple(u for u in re.split(r"[\s,]+", value.strip()) if u)
    if not uris:
        raise ValueError("expected one or more ldaps://HOST[:PORT] or ldap://HOST[:PORT] URIs")
    for uri in uris:
        m = _LDAP_URI.match(uri)
        if not m or (m.group(3) and not 1 <= int(m.group(3)) <= 65535):
            raise ValueError(f"expected ldaps://HOST[:PORT] or ldap://HOST[:PORT], got {uri!r}")
    return uris


def parse_dn(value: str) -> str:
    if "=" not in value:
        raise ValueError(f"expected a distinguished name such as ou=people,dc=example,dc=com, got {value!r}")
    return value


def filter_template(*placeholders: str) -> Callable[[str], str]:
    """An LDAP filter with ``{placeholder}`` fields, e.g. ``(uid={username})``."""
    def parse(value: str) -> str:
        if not (value.startswith("(") and value.endswith(")")) or value.count("(") != value.count(")"):
            raise ValueError(f"expected an LDAP filter in parentheses, got {value!r}")
        try:
            value.format(**{name: "x" for name in placeholders})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"expected only the placeholders {', '.join('{' + p + '}' for p in placeholders)} "
                             f"in {value!r}: {exc}") from None
        if "{" + placeholders[0] + "}" not in value:
            raise ValueError(f"expected the placeholder {{{placeholders[0]}}} in {value!r}")
        return value
    return parse


def parse_regex(value: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise ValueError(f"expected a regular expression: {exc}") from None
    if not (value.startswith("^") and value.endswith("$")):
        raise ValueError(f"expected a pattern anchored with ^ and $, got {value!r}")
    return pattern


def parse_backends(value: str) -> tuple[str, ...]:
    """``local``, ``ldap``, or both in the order they are asked: ``ldap, local``."""
    names = tuple(n for n in re.split(r"[\s,]+", value.strip().lower()) if n)
    if not names or any(n not in ("local", "ldap") for n in names) or len(set(names)) != len(names):
        raise ValueError(f"expected local, ldap, or both in order (e.g. 'ldap, local'), got {value!r}")
    return names


def parse_globs(value: str) -> tuple[str, ...]:
    """Task-family glob patterns separated by blanks or commas, e.g. ``Etl*, Report*``."""
    globs = tuple(g for g in re.split(r"[\s,]+", value.strip()) if g)
    if not globs:
        raise ValueError("expected one or more task-family patterns such as Etl* or ReportDaily")
    for glob in globs:
        if not re.match(r"^[A-Za-z0-9_.*?\[\]!-]+$", glob):
            raise ValueError(f"expected a task-family pattern of letters, digits, _ . - and * ? [ ], got {glob!r}")
    return globs


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


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    """Reverse proxies whose forwarded client address is believed (server/client_address.py):
    address ranges, and ``unix`` for whatever connects to the unix-socket listener."""

    networks: tuple[IPNetwork, ...] = ()
    unix: bool = False

    def trusts(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.networks)

    def __str__(self) -> str:
        return ", ".join([*(["unix"] if self.unix else []), *(str(n) for n in self.networks)])


def parse_trusted_proxies(value: str) -> TrustedProxies:
    """``unix`` and/or IP addresses and CIDR ranges, separated by commas or blanks."""
    networks: list[IPNetwork] = []
    unix = False
    for item in re.split(r"[,\s]+", value.strip()):
        if not item:
            continue
        if item == "unix":
            unix = True
            continue
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"expected unix, an IP address or an address range such as 10.0.0.0/8, "
                             f"got {item!r} ({exc})") from None
    return TrustedProxies(tuple(networks), unix)


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
        "trusted_proxies": Key(parse_trusted_proxies, TrustedProxies()),
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
        "refuse_stale_snapshot": Key(parse_bool, False),
    },
    "auth": {
        "backend": Key(parse_backends, ("local",)),
        # Must exist only when the local backend is used: checked in _cross_checks.
        "users_file": Key(parse_path, Path("/etc/luigi-appliance/users")),
        "cache_ttl": Key(duration_range(0, 86400), 300.0),
        "failure_limit": Key(int_range(1, 1000), 5),
        "failure_window": Key(duration_range(1, 86400), 300.0),
        "lockout": Key(duration_range(1, 86400), 900.0),
    },
    "ldap": {
        "servers": Key(parse_ldap_uris, ()),
        "start_tls": Key(parse_bool, True),
        "allow_insecure": Key(parse_bool, False),
        "ca_file": Key(parse_path, None, must_exist=True),
        "connect_timeout": Key(duration_range(0.1, 120), 5.0),
        "receive_timeout": Key(duration_range(0.1, 300), 10.0),
        "bind_dn": Key(parse_dn, None),
        "bind_password": Key(str, None, secret=True),
        "user_base": Key(parse_dn, None),
        "user_filter": Key(filter_template("username"), "(uid={username})"),
        "username_pattern": Key(parse_regex, re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")),
        "group_source": Key(choice("memberof", "search"), "memberof"),
        "group_base": Key(parse_dn, None),
        "group_filter": Key(filter_template("dn", "username"),
                            "(|(member={dn})(uniqueMember={dn})(memberUid={username}))"),
        "group_name_attribute": Key(str, "cn"),
        "nested_depth": Key(int_range(0, 20), 5),
        "referrals": Key(parse_bool, False),
        "outage_grace": Key(duration_range(0, 7 * 86400), 3600.0),
    },
    "tokens": {
        "ttl": Key(duration_range(60, 86400), 900.0),
        "keys_file": Key(parse_path, None),
    },
    "audit": {
        "file": Key(parse_path, Path("/var/log/luigi-appliance/audit.log")),
        "stderr": Key(parse_bool, True),
    },
    "secrets": {
        "key_file": Key(parse_path, Path("/etc/luigi-appliance/secret.key")),
    },
    "logging": {
        "level": Key(choice("debug", "info", "warning", "error"), "info"),
        "format": Key(choice("auto", "journal", "text"), "auto"),
    },
    # Browser login sessions (auth/session.py).
    "session": {
        "idle_timeout": Key(duration_range(1, 86400), 1800.0),
        "absolute_timeout": Key(duration_range(1, 30 * 86400), 28800.0),
    },
    # Task history (docs/history.md); HistorySettings holds the defaults' meaning.
    "history": {
        "backend": Key(choice(*BACKENDS), "none"),
        "sqlite_path": Key(parse_path, Path("/var/lib/luigi-appliance/history.db")),
        "host": Key(parse_db_host, "localhost"),
        "port": Key(int_range(1, 65535), 5432),
        "dbname": Key(parse_identifier, "luigi"),
        "user": Key(parse_identifier, "luigi_scheduler"),
        "password": Key(str, None, secret=True),
        "admin_user": Key(parse_identifier, None),
        "admin_password": Key(str, None, secret=True),
        # None: verify-full for a remote host, disable for loopback/unix (default_sslmode).
        "sslmode": Key(choice(*SSLMODES), None),
        "sslrootcert": Key(parse_path, None, must_exist=True),
        "allow_insecure": Key(parse_bool, False),
        "pool_size": Key(int_range(1, 32), 2),
        "connect_timeout": Key(duration_range(1, 300), 5.0),
        "statement_timeout": Key(duration_range(1, 3600), 30.0),
        "queue_size": Key(int_range(1000, 10_000_000), 100_000),
        "batch_size": Key(int_range(1, 10_000), 500),
        "retry_interval": Key(duration_range(0.1, 300), 5.0),
        "spool_limit": Key(size_range(1024 * 1024, 1024**4), 1024**3),
        "spool_full": Key(choice(*SPOOL_FULL_POLICIES), "drop-new"),
        "page_size": Key(int_range(10, 1000), 100),
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
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)


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
    refuse_stale_snapshot: bool = False

    @property
    def snapshot_path(self) -> Path:
        return self.dir / "state.pickle"

    @property
    def generation_path(self) -> Path:
        return self.dir / "state.generation"

    @property
    def default_key_path(self) -> Path:
        return self.dir / "state.key"


@dataclass(frozen=True)
class AuthSettings:
    backends: tuple[str, ...]
    users_file: Path
    cache_ttl: float
    failure_limit: int
    failure_window: float
    lockout: float
    # Group name (normalised like a config key) -> role, and -> task-family patterns.
    roles: dict[str, Any] = field(default_factory=dict)
    families: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class LdapSettings:
    servers: tuple[str, ...]
    start_tls: bool
    allow_insecure: bool
    ca_file: Path | None
    connect_timeout: float
    receive_timeout: float
    bind_dn: str | None
    bind_password_file: Path | None
    user_base: str | None
    user_filter: str
    username_pattern: re.Pattern[str]
    group_source: str
    group_base: str | None
    group_filter: str
    group_name_attribute: str
    nested_depth: int
    referrals: bool
    outage_grace: float
    bind_password: bytes | None = field(default=None, repr=False)

    def read_bind_password(self) -> str | None:
        if self.bind_password is not None:
            return self.bind_password.decode()
        if self.bind_password_file is not None:
            return read_secret_file(self.bind_password_file).decode().strip("\r\n")
        return None


@dataclass(frozen=True)
class TokenSettings:
    ttl: float
    keys_file: Path | None


@dataclass(frozen=True)
class AuditSettings:
    file: Path
    stderr: bool


@dataclass(frozen=True)
class LoggingSettings:
    level: str
    format: str


@dataclass(frozen=True)
class SessionSettings:
    """Browser sessions: ended after ``idle_timeout`` seconds unused or ``absolute_timeout`` after login."""

    idle_timeout: float = 1800.0
    absolute_timeout: float = 28800.0


@dataclass(frozen=True)
class Settings:
    """Everything ``serve`` needs, validated."""

    server: ServerSettings
    tls: TLSSettings
    state: StateSettings
    auth: AuthSettings
    ldap: LdapSettings
    tokens: TokenSettings
    audit: AuditSettings
    logging: LoggingSettings
    secrets_key_file: Path
    scheduler: dict[str, Any]
    resources: dict[str, int]
    files: list[str]
    # (section, key) -> (display value, origin) for ``config show``
    effective: dict[tuple[str, str], tuple[str, str]]
    history: HistorySettings = field(default_factory=HistorySettings)
    session: SessionSettings = field(default_factory=SessionSettings)


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
    if isinstance(value, tuple):
        return ", ".join(value)
    if isinstance(value, re.Pattern):
        return value.pattern
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


def _load_freeform(doc: IniDocument, loader: SchemaLoader, section: str,
                   parse: Callable[[str], Any]) -> dict[str, Any]:
    """``name = value`` lines of a section whose names are the user's (resources, groups)."""
    values: dict[str, Any] = {}
    for entry in doc.in_section(section):
        try:
            values[entry.key] = parse(entry.value)
        except ValueError as exc:
            loader.issue(entry, section, entry.key, str(exc))
            continue
        loader.effective[(section, entry.key)] = (entry.value, f"{entry.file}:{entry.line}")
    return values


def _load_resources_section(doc: IniDocument, loader: SchemaLoader) -> dict[str, int]:
    """[resources] name = amount, as luigi's own [resources] section."""
    return _load_freeform(doc, loader, "resources", int_range(0, 2**31 - 1))


def _load_group_sections(doc: IniDocument, loader: SchemaLoader
                         ) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """[roles] group = role and [families] group = patterns; group names compare like keys."""
    from luigi_appliance.auth import Role

    return _load_freeform(doc, loader, "roles", Role.parse), _load_freeform(doc, loader, "families", parse_globs)


def _ldap_cross_checks(loader: SchemaLoader, roles: dict[str, Any]) -> None:
    v = loader.values
    doc = loader.doc
    if "ldap" not in (v.get(("auth", "backend")) or ()):
        return
    where = doc.get("auth", "backend")
    if not v.get(("ldap", "servers")):
        loader.issue(where, "ldap", "servers", "[auth] backend includes ldap: give the directory's URIs, "
                     "e.g. servers = ldaps://ldap1.example.com ldaps://ldap2.example.com")
    if not v.get(("ldap", "user_base")):
        loader.issue(where, "ldap", "user_base", "[auth] backend includes ldap: give the base DN user "
                     "entries are searched under, e.g. user_base = ou=people,dc=example,dc=com")
    plain = [u for u in v.get(("ldap", "servers")) or () if u.startswith("ldap://")]
    if plain and not v.get(("ldap", "start_tls")) and not v.get(("ldap", "allow_insecure")):
        loader.issue(doc.get("ldap", "start_tls"), "ldap", "start_tls",
                     f"{plain[0]} without StartTLS sends passwords in clear; use ldaps://, keep "
                     "start_tls = true, or set allow_insecure = true to accept the risk")
    has_pw = v.get(("ldap", "bind_password")) is not None or v.get(("ldap", "bind_password_file")) is not None
    if v.get(("ldap", "bind_dn")) and not has_pw:
        loader.issue(doc.get("ldap", "bind_dn"), "ldap", "bind_password",
                     "bind_dn needs its password: bind_password_file = PATH or bind_password = enc:...")
    if has_pw and not v.get(("ldap", "bind_dn")):
        loader.issue(doc.get("ldap", "bind_password_file") or doc.get("ldap", "bind_password"), "ldap",
                     "bind_dn", "a bind password is given but no bind_dn to bind as")
    if v.get(("ldap", "group_source")) == "search" and not v.get(("ldap", "group_base")):
        loader.issue(doc.get("ldap", "group_source"), "ldap", "group_base",
                     "group_source = search needs group_base, the DN groups are searched under")
    if not roles:
        loader.issue(where, "roles", None, "[auth] backend includes ldap but no [roles] entry maps a "
                     "directory group to a role: nobody could log in (e.g. luigi-admins = admin)")


def _cross_checks(loader: SchemaLoader) -> None:
    v = loader.values
    doc = loader.doc
    users_file: Path | None = v.get(("auth", "users_file"))
    if loader.check_files and "local" in (v.get(("auth", "backend")) or ()) and users_file and not users_file.exists():
        loader.issue(doc.get("auth", "users_file") or doc.get("auth", "backend"), "auth", "users_file",
                     f"file {users_file} does not exist (create it with 'luigi-appliance user add')")
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
    roles, families = _load_group_sections(doc, loader)
    _cross_checks(loader)
    _ldap_cross_checks(loader, roles)
    _history_cross_checks(loader)
    if issues:
        order = {name: i for i, name in enumerate(doc.files)}
        raise ConfigError(sorted(issues, key=lambda i: (order.get(i.file, len(order)), i.line or 0)))
    v = loader.values
    return Settings(
        server=ServerSettings(v[("server", "listen")], v[("server", "insecure_http")],
                              v[("server", "max_body_bytes")], v[("server", "hsts_max_age")],
                              v[("server", "trusted_proxies")]),
        tls=TLSSettings(v[("tls", "cert_file")], v[("tls", "key_file")], v[("tls", "ca_file")],
                        v[("tls", "min_version")]),
        state=StateSettings(v[("state", "dir")], v[("state", "snapshot_interval")],
                            v[("state", "hmac_key_file")], v[("state", "hmac_key")],
                            refuse_stale_snapshot=v[("state", "refuse_stale_snapshot")]),
        auth=AuthSettings(v[("auth", "backend")], v[("auth", "users_file")], v[("auth", "cache_ttl")],
                          v[("auth", "failure_limit")], v[("auth", "failure_window")], v[("auth", "lockout")],
                          roles, families),
        ldap=LdapSettings(**{name: v[("ldap", name)] for name in SCHEMA["ldap"] if name != "bind_password"},
                          bind_password_file=v[("ldap", "bind_password_file")],
                          bind_password=v[("ldap", "bind_password")]),
        tokens=TokenSettings(v[("tokens", "ttl")], v[("tokens", "keys_file")]),
        audit=AuditSettings(v[("audit", "file")], v[("audit", "stderr")]),
        logging=LoggingSettings(v[("logging", "level")], v[("logging", "format")]),
        secrets_key_file=v[("secrets", "key_file")],
        scheduler=scheduler,
        resources=resources,
        files=doc.files,
        effective=loader.effective,
        history=_history_settings(loader.values),
        session=SessionSettings(v[("session", "idle_timeout")], v[("session", "absolute_timeout")]),
    )


def _history_cross_checks(loader: SchemaLoader) -> None:
    """TLS to a remote database verifies the server unless the admin explicitly accepts less."""
    v = loader.values
    doc = loader.doc
    if v.get(("history", "backend")) != "postgresql":
        return
    host = v.get(("history", "host")) or "localhost"
    sslmode = v.get(("history", "sslmode")) or default_sslmode(host)
    local = host.startswith("/") or is_loopback_host(host)
    where = doc.get("history", "sslmode") or doc.get("history", "host") or doc.get("history", "backend")
    if not local and sslmode != "verify-full" and not v.get(("history", "allow_insecure")):
        loader.issue(where, "history", "sslmode",
                     f"sslmode = {sslmode} does not verify that {host} is the database server (verify-full "
                     "does); refused for a non-local host unless allow_insecure = true")
    if sslmode.startswith("verify") and v.get(("history", "sslrootcert")) is None:
        loader.issue(where, "history", "sslrootcert",
                     f"sslmode = {sslmode} needs sslrootcert, the CA certificate(s) that signed the database "
                     "server's certificate, e.g. sslrootcert = /etc/luigi-appliance/tls/db-ca.pem")
    has_admin_pw = v.get(("history", "admin_password")) is not None or v.get(("history", "admin_password_file"))
    if has_admin_pw and not v.get(("history", "admin_user")):
        loader.issue(doc.get("history", "admin_password_file") or doc.get("history", "admin_password"),
                     "history", "admin_user", "an admin password is given but no admin_user (the database owner)")


def _history_settings(v: dict[tuple[str, str], Any]) -> HistorySettings:
    host = v[("history", "host")]
    names = [name for name in SCHEMA["history"] if name not in ("sslmode",)]
    values = {name: v[("history", name)] for name in names}
    values["sslmode"] = v[("history", "sslmode")] or default_sslmode(host)
    for secret in ("password", "admin_password"):
        values[f"{secret}_file"] = v[("history", f"{secret}_file")]
    return HistorySettings(**values)


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
