"""What a principal may do beyond its role: a role through [roles], task families through [families].

One rule for every backend: the directory's accounts get role and families from their groups
(``roles_and_families``); local accounts get their role from the users file and the families of
no group (``families_for`` with no groups). The guard and the scheduler check the families with
``family_allowed``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from luigi_appliance.auth import Role
from luigi_appliance.auth.settings import AuthSettings


def allowlist(role: Role | None, rules_configured: bool, patterns: Iterable[str]) -> tuple[str, ...] | None:
    """The task-family allowlist of a principal with ``role`` whose matching rules give ``patterns``.

    Unrestricted (None) when no family rules are configured or the role is operator or above;
    otherwise exactly those patterns, possibly none (fail closed). The one rule of every backend:
    directory groups here, OIDC claims in auth/oidc/claims.py.
    """
    if not rules_configured or (role is not None and role >= Role.OPERATOR):
        return None
    return tuple(dict.fromkeys(patterns))


def families_for(role: Role | None, groups: frozenset[str], auth: AuthSettings) -> tuple[str, ...] | None:
    """The task-family patterns of a principal with ``role`` in ``groups`` (``allowlist`` over
    [families]: a local worker account, which has no groups, gets none once [families] is used)."""
    return allowlist(role, bool(auth.families), (p for group in sorted(groups) for p in auth.families.get(group, ())))


def roles_and_families(groups: frozenset[str], auth: AuthSettings) -> tuple[Role | None, tuple[str, ...] | None]:
    """The highest role any group maps to, and that role's task families (``families_for``)."""
    roles = [auth.roles[g] for g in groups if g in auth.roles]
    role = max(roles) if roles else None
    return role, families_for(role, groups, auth)


def family_allowed(family: str, patterns: tuple[str, ...] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(family, p) for p in patterns)
