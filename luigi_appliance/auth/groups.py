"""What a principal's groups grant: a role through [roles], task families through [families].

The same rules for every backend that knows groups (the directory today); the guard checks the
families on add_task through ``family_allowed``.
"""

from __future__ import annotations

import fnmatch

from luigi_appliance.auth import Role
from luigi_appliance.config import AuthSettings


def roles_and_families(groups: frozenset[str], auth: AuthSettings) -> tuple[Role | None, tuple[str, ...] | None]:
    """The highest role any group maps to, and the union of the groups' family patterns.

    Families are unrestricted (None) when [families] is empty or the role is operator or above;
    otherwise a principal gets exactly its groups' patterns, possibly none (fail closed).
    """
    roles = [auth.roles[g] for g in groups if g in auth.roles]
    role = max(roles) if roles else None
    if not auth.families or (role is not None and role >= Role.OPERATOR):
        return role, None
    patterns: list[str] = []
    for group in sorted(groups):
        patterns.extend(auth.families.get(group, ()))
    return role, tuple(dict.fromkeys(patterns))


def family_allowed(family: str, patterns: tuple[str, ...] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(family, p) for p in patterns)
