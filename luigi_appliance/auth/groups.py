"""What a principal may do beyond its role: a role through [roles], task families through [families].

One rule for every backend: the directory's accounts get role and families from their groups
(``roles_and_families``); local accounts get their role from the users file and the families of
no group (``families_for`` with no groups). The guard and the scheduler check the families with
``family_allowed``.
"""

from __future__ import annotations

import fnmatch

from luigi_appliance.auth import Role
from luigi_appliance.auth.settings import AuthSettings


def families_for(role: Role | None, groups: frozenset[str], auth: AuthSettings) -> tuple[str, ...] | None:
    """The task-family patterns of a principal with ``role`` in ``groups``.

    Unrestricted (None) when [families] is empty or the role is operator or above; otherwise
    exactly the groups' patterns, possibly none (fail closed: a local worker account, which has
    no groups, gets none once [families] is used).
    """
    if not auth.families or (role is not None and role >= Role.OPERATOR):
        return None
    patterns: list[str] = []
    for group in sorted(groups):
        patterns.extend(auth.families.get(group, ()))
    return tuple(dict.fromkeys(patterns))


def roles_and_families(groups: frozenset[str], auth: AuthSettings) -> tuple[Role | None, tuple[str, ...] | None]:
    """The highest role any group maps to, and that role's task families (``families_for``)."""
    roles = [auth.roles[g] for g in groups if g in auth.roles]
    role = max(roles) if roles else None
    return role, families_for(role, groups, auth)


def family_allowed(family: str, patterns: tuple[str, ...] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(family, p) for p in patterns)
