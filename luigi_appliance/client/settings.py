"""client.conf: where the scheduler is and how to trust it, for ``luigi-appliance run``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from luigi_appliance.config import Key, SchemaLoader, choice, duration_range, int_range, parse_path
from luigi_appliance.errors import ConfigError, ConfigIssue
from luigi_appliance.hosts import is_loopback_host
from luigi_appliance.inifile import Entry, read_files

DEFAULT_CLIENT_CONFIG = Path("/etc/luigi-appliance/client.conf")
CLIENT_CONFIG_ENV = "LUIGI_APPLIANCE_CLIENT_CONFIG"


def parse_scheduler_url(value: str) -> str:
    """https://HOST:PORT/ (http:// only to a loopback address); never credentials in the URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"expected https://HOST:PORT/, got {value!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not belong in the URL (they end up in logs); use a credentials file")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"plain http:// is only allowed to a loopback address, not {parts.hostname}")
    return value if value.endswith("/") else value + "/"


CLIENT_SCHEMA = {
    "client": {
        "scheduler_url": Key(parse_scheduler_url, "https://localhost:8082/"),
        "ca_file": Key(parse_path, None, must_exist=True),
        "credentials_file": Key(parse_path, None),
        "connect_timeout": Key(duration_range(1, 600), 10.0),
        "retry_attempts": Key(int_range(1, 100), 3),
        "retry_wait": Key(duration_range(0, 3600), 30.0),
        "auth": Key(choice("token", "basic"), "token"),
    },
}


@dataclass(frozen=True)
class ClientSettings:
    scheduler_url: str
    ca_file: Path | None
    credentials_file: Path | None
    connect_timeout: float
    retry_attempts: int
    retry_wait: float
    auth: str


def _present(path: Path) -> bool:
    """True if ``path`` exists or cannot be checked (then reading it reports why)."""
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def load_client_settings(explicit: Path | None, overrides: dict[str, str]) -> ClientSettings:
    """Read client.conf (optional unless named explicitly) and apply command-line overrides."""
    path = explicit or Path(os.environ.get(CLIENT_CONFIG_ENV) or DEFAULT_CLIENT_CONFIG)
    issues: list[ConfigIssue] = []
    paths = [path] if (explicit or _present(path)) else []
    doc = read_files(paths, issues)
    for name, value in overrides.items():
        doc.entries[("client", name)] = Entry("client", name, value, "<command line>", 0)
    loader = SchemaLoader(doc, issues, check_files=True, schema=CLIENT_SCHEMA, freeform=())
    loader.load()
    if issues:
        raise ConfigError(issues)
    v = {name: loader.values[("client", name)] for name in CLIENT_SCHEMA["client"]}
    return ClientSettings(**v)
