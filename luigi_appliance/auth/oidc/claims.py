"""Verified claims to a principal: the user name, the groups, and the role and task families.

The model is the one of directory groups (auth/groups.py): rules give roles and task-family
patterns, the highest role wins, the families are the union of every matching rule's, operator
and above are unrestricted, and an identity matched by no role rule has no role (refused).
What an issuer's rules can match is wider than a group: ``[oidc.NAME] roles`` and ``families``
are lists of ``MATCH -> ROLE`` / ``MATCH -> PATTERNS`` separated by ``;``, where MATCH is

* ``group:G``: G is one of the values of the issuer's groups claim(s), compared exactly;
* ``claim:C=V``: the claim C equals V (a string claim), or holds V (a list claim); true, false
  and numbers compare as their JSON text;
* ``issuer:NAME``: every verified identity of the issuer NAME (the section's own name).

Every rule that matches contributes, never just the first: a user in two teams gets the
families of both. The rules are per issuer on purpose: a claim value (``repository_owner``,
``groups``) means something only for the issuer that asserts it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from luigi_appliance.auth import Role
from luigi_appliance.auth.groups import allowlist
from luigi_appliance.auth.names import name_problem
from luigi_appliance.auth.settings import parse_globs

_RULE = re.compile(r"^(group|claim|issuer):(.+?)\s*->\s*(.+)$")
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_.:/-]+$")


@dataclass(frozen=True)
class Match:
    """What a rule matches: ``kind`` group, claim or issuer; ``value`` only for a claim."""

    kind: str
    name: str
    value: str | None = None

    def __str__(self) -> str:
        return f"claim:{self.name}={self.value}" if self.kind == "claim" else f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class RoleRule:
    match: Match
    role: Role

    def __str__(self) -> str:
        return f"{self.match} -> {self.role}"


@dataclass(frozen=True)
class FamilyRule:
    match: Match
    patterns: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.match} -> {' '.join(self.patterns)}"


def _parse_match(kind: str, text: str, item: str) -> Match:
    if kind == "claim":
        name, eq, value = text.partition("=")
        if not eq or not _CLAIM_NAME.match(name) or not value:
            raise ValueError(f"expected claim:NAME=VALUE (e.g. claim:repository_owner=acme), got {item!r}")
        return Match("claim", name, value)
    if not text or any(ch.isspace() for ch in text):
        raise ValueError(f"expected {kind}:NAME without blanks, got {item!r}")
    return Match(kind, text)


def _items(value: str, example: str) -> list[tuple[Match, str]]:
    items = []
    for item in (part.strip() for part in value.split(";")):
        if not item:
            continue
        m = _RULE.match(item)
        if not m:
            raise ValueError(f"expected rules 'MATCH -> ...' separated by ';' with MATCH group:G, claim:C=V "
                             f"or issuer:NAME (e.g. {example}), got {item!r}")
        items.append((_parse_match(m.group(1), m.group(2).strip(), item), m.group(3).strip()))
    if not items:
        raise ValueError(f"expected one or more rules such as {example}")
    return items


def parse_role_rules(value: str) -> tuple[RoleRule, ...]:
    """``group:luigi-admins -> admin; claim:repository_owner=acme -> worker``."""
    return tuple(RoleRule(match, Role.parse(role))
                 for match, role in _items(value, "group:luigi-admins -> admin"))


def parse_family_rules(value: str) -> tuple[FamilyRule, ...]:
    """``group:etl -> Etl* Report*; claim:repository=acme/pipelines -> Etl*``."""
    return tuple(FamilyRule(match, parse_globs(patterns))
                 for match, patterns in _items(value, "group:etl -> Etl* Report*"))


@dataclass(frozen=True)
class Identity:
    """What the claims say, before the rules: the user name and the groups."""

    name: str
    groups: frozenset[str]


@dataclass(frozen=True)
class Grant:
    """What the rules give: the role (None: no rule gave one), the families (None: unrestricted),
    and every rule that matched, with why, for ``oidc explain``."""

    role: Role | None
    families: tuple[str, ...] | None
    matched: tuple[tuple[str, str], ...]  # (rule, why)


def user_name(claims: Mapping[str, Any], name_claims: tuple[str, ...]) -> str:
    """The first of ``name_claims`` present; ValueError when none is, or it is no valid user name."""
    for claim in name_claims:
        value = claims.get(claim)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"the user-name claim {claim} is not a string")
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(f"the user-name claim {claim} is no valid user name ({problem})")
        return value
    raise ValueError(f"the token has none of the user-name claims {', '.join(name_claims)}")


def groups_of(claims: Mapping[str, Any], group_claims: tuple[str, ...]) -> frozenset[str]:
    """The values of the groups claims (a string or a list of strings each); ValueError otherwise."""
    groups: set[str] = set()
    for claim in group_claims:
        value = claims.get(claim)
        if value is None:
            continue
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"the groups claim {claim} is not a string or a list of strings")
        groups.update(values)
    return frozenset(groups)


def _claim_holds(claim: Any, value: str) -> bool:
    def text(item: Any) -> str | None:
        if isinstance(item, str):
            return item
        if isinstance(item, bool | int | float):
            return json.dumps(item)
        return None

    if isinstance(claim, list):
        return any(text(item) == value for item in claim)
    return text(claim) == value


def _why(match: Match, issuer: str, claims: Mapping[str, Any], groups: frozenset[str]) -> str | None:
    """Why ``match`` matches this identity, or None when it does not."""
    if match.kind == "group":
        return f"{match.name!r} is among the {len(groups)} groups" if match.name in groups else None
    if match.kind == "issuer":
        return f"the token is from issuer {issuer}" if match.name == issuer else None
    assert match.value is not None
    claim = claims.get(match.name)
    if claim is None or not _claim_holds(claim, match.value):
        return None
    return f"claim {match.name} is {match.value!r}" if not isinstance(claim, list) else (
        f"claim {match.name} holds {match.value!r}")


def grant(issuer: str, claims: Mapping[str, Any], groups: frozenset[str], roles: tuple[RoleRule, ...],
          families: tuple[FamilyRule, ...]) -> Grant:
    """Apply every rule of issuer ``issuer``: each matching one contributes."""
    matched: list[tuple[str, str]] = []
    granted: list[Role] = []
    for role_rule in roles:
        why = _why(role_rule.match, issuer, claims, groups)
        if why is not None:
            granted.append(role_rule.role)
            matched.append((f"roles: {role_rule}", why))
    patterns: list[str] = []
    for family_rule in families:
        why = _why(family_rule.match, issuer, claims, groups)
        if why is not None:
            patterns.extend(family_rule.patterns)
            matched.append((f"families: {family_rule}", why))
    role = max(granted) if granted else None
    return Grant(role, allowlist(role, bool(families), patterns), tuple(matched))
