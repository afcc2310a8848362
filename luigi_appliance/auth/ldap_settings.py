"""The [ldap] section: the directory behind ``[auth] backend = ldap`` (auth/ldap.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.secret_values import secret_text
from luigi_appliance.settings.declare import key, secret
from luigi_appliance.settings.loader import SchemaLoader, section
from luigi_appliance.settings.parsers import (
    choice,
    duration_range,
    int_range,
    parse_bool,
    parse_path,
    parse_regex,
    split_list,
)

_LDAP_URI = re.compile(r"^(ldaps?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?/?$")


def parse_ldap_uris(value: str) -> tuple[str, ...]:
    """One or more ``ldap://HOST[:PORT]`` / ``ldaps://HOST[:PORT]``, separated by blanks or commas."""
    uris = split_list(value)
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


@dataclass(frozen=True)
class LdapSettings:
    servers: tuple[str, ...] = key(parse_ldap_uris, (), "ldaps:// or ldap:// URIs, tried in order")
    start_tls: bool = key(parse_bool, True, "upgrade ldap:// connections with StartTLS")
    allow_insecure: bool = key(parse_bool, False, "accept ldap:// without StartTLS (passwords in clear)")
    ca_file: Path | None = key(parse_path, None, "PEM CA certificate(s) of the directory (unset: the system's)",
                               must_exist=True)
    connect_timeout: float = key(duration_range(0.1, 120), 5.0, "timeout of a connection attempt to one server")
    receive_timeout: float = key(duration_range(0.1, 300), 10.0, "timeout of each answer from a server")
    bind_dn: str | None = key(parse_dn, None, "the search account (unset: anonymous search)")
    bind_password_file: Path | None = None
    bind_password: bytes | None = secret("password of bind_dn")
    user_base: str | None = key(parse_dn, None, "the DN under which user entries are searched")
    user_filter: str = key(filter_template("username"), "(uid={username})", "LDAP filter finding a user's entry")
    username_pattern: re.Pattern[str] = key(parse_regex, re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
                                            "what a login name must match before the directory is asked")
    group_source: str = key(choice("memberof", "search"), "memberof", "memberof or search")
    group_base: str | None = key(parse_dn, None, "the DN under which groups are searched")
    group_filter: str = key(filter_template("dn", "username"),
                            "(|(member={dn})(uniqueMember={dn})(memberUid={username}))",
                            "LDAP filter finding the groups a member belongs to")
    group_name_attribute: str = key(str, "cn", "the attribute naming a group in [roles] and [families]")
    nested_depth: int = key(int_range(0, 20), 5, "levels of groups-in-groups followed")
    referrals: bool = key(parse_bool, False, "follow referrals the directory returns")
    outage_grace: float = key(duration_range(0, 7 * 86400), 3600.0,
                              "how long verified logins keep working while no server is reachable")

    def read_bind_password(self) -> str | None:
        return secret_text(self.bind_password, self.bind_password_file)


def _check_ldap(loader: SchemaLoader) -> None:
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
    if not any(section == "roles" for section, _ in v):
        loader.issue(where, "roles", None, "[auth] backend includes ldap but no [roles] entry maps a "
                     "directory group to a role: nobody could log in (e.g. luigi-admins = admin)")


LDAP = section("ldap", LdapSettings, _check_ldap)
