"""The [auth], [roles], [families], [tokens] and [session] sections.

``[auth] backend`` names account backends of the registry (auth/registry.py), which the
composition (config_loader.py) checks: this module only reads the list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luigi_appliance.auth import Role
from luigi_appliance.settings.declare import key
from luigi_appliance.settings.loader import SchemaLoader, section
from luigi_appliance.settings.parsers import duration_range, int_range, parse_bool, parse_path, split_list


def parse_backends(value: str) -> tuple[str, ...]:
    """Backend names in the order they are asked, e.g. ``ldap, local``; each at most once."""
    names = split_list(value.lower())
    if not names or any(not n.isidentifier() for n in names) or len(set(names)) != len(names):
        raise ValueError(f"expected account backends in the order they are asked, each once "
                         f"(e.g. 'ldap, local'), got {value!r}")
    return names


def parse_globs(value: str) -> tuple[str, ...]:
    """Task-family glob patterns separated by blanks or commas, e.g. ``Etl*, Report*``."""
    globs = split_list(value)
    if not globs:
        raise ValueError("expected one or more task-family patterns such as Etl* or ReportDaily")
    for glob in globs:
        if not re.match(r"^[A-Za-z0-9_.*?\[\]!-]+$", glob):
            raise ValueError(f"expected a task-family pattern of letters, digits, _ . - and * ? [ ], got {glob!r}")
    return globs


@dataclass(frozen=True)
class AuthSettings:
    backends: tuple[str, ...] = key(parse_backends, ("local",),
                                    "account backends, in the order they are asked", name="backend")
    # Must exist only when the local backend is used: checked in _check_auth.
    users_file: Path = key(parse_path, Path("/etc/luigi-appliance/users"), "the local accounts file")
    cache_ttl: float = key(duration_range(0, 86400), 300.0,
                           "how long a verified name and password are remembered (0: not at all)")
    failure_limit: int = key(int_range(1, 1000), 5, "failed logins after which a name or address is locked out")
    failure_window: float = key(duration_range(1, 86400), 300.0, "how long a failed login counts")
    lockout: float = key(duration_range(1, 86400), 900.0, "how long a lockout lasts")
    # Group name (normalised like a config key) -> role, and -> task-family patterns.
    roles: dict[str, Any] = field(default_factory=dict)
    families: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenSettings:
    ttl: float = key(duration_range(60, 86400), 900.0, "how long a bearer token is accepted")
    keys_file: Path | None = key(parse_path, None, "token signing keys (unset: [state] dir/token.keys)")


@dataclass(frozen=True)
class SessionSettings:
    """Browser sessions: ended after ``idle_timeout`` seconds unused or ``absolute_timeout`` after login."""

    idle_timeout: float = key(duration_range(1, 86400), 1800.0, "a browser session unused this long ends")
    absolute_timeout: float = key(duration_range(1, 30 * 86400), 28800.0,
                                  "a browser session ends this long after its login")
    # False: people log in only through an identity provider ([oidc.NAME]); programs still use
    # HTTP Basic, tokens or certificates.
    password_login: bool = key(parse_bool, True,
                               "the login page's name and password form (false: identity providers' buttons only)")


# Sections whose names are the user's: directory group -> role, and -> task-family patterns.
GROUP_SECTIONS = ("roles", "families")


def load_groups(loader: SchemaLoader) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """[roles] group = role and [families] group = patterns; group names compare like keys."""
    return loader.load_freeform("roles", Role.parse), loader.load_freeform("families", parse_globs)


def _check_auth(loader: SchemaLoader) -> None:
    v = loader.values
    doc = loader.doc
    users_file: Path | None = v.get(("auth", "users_file"))
    if loader.check_files and "local" in (v.get(("auth", "backend")) or ()) and users_file and not users_file.exists():
        loader.issue(doc.get("auth", "users_file") or doc.get("auth", "backend"), "auth", "users_file",
                     f"file {users_file} does not exist (create it with 'luigi-appliance user add')")


def _check_session(loader: SchemaLoader) -> None:
    # Without the form and without an issuer's button nobody could log in with a browser.
    if loader.values.get(("session", "password_login")) is False and not any(
            name.startswith("oidc.") and loader.values.get((name, "browser_login")) for name in loader.doc.sections):
        loader.issue(loader.doc.get("session", "password_login"), "session", "password_login",
                     "false needs an [oidc.NAME] section with browser_login = true (else no browser can "
                     "log in): configure one or set password_login = true")


AUTH = section("auth", AuthSettings, _check_auth)
TOKENS = section("tokens", TokenSettings)
SESSION = section("session", SessionSettings, _check_session)
