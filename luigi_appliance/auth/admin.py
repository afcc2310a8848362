"""Administrator commands of the auth layer: ``ldap test``, ``token issue``, ``token rotate-key``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from luigi_appliance.auth import Principal
from luigi_appliance.auth.ldap import ldap_backend
from luigi_appliance.auth.registry import account_backend
from luigi_appliance.auth.tokens import TokenService, keys_file, rotate_keys
from luigi_appliance.config import Settings
from luigi_appliance.errors import ApplianceError


def ldap_test(settings: Settings, user: str | None, password: Callable[[], str] | None, out: TextIO) -> int:
    """Connect and bind the search account; with ``user``, show its entry, groups, role and
    allowlist; with ``password``, also check that password by binding as the user.
    Exit status 0 when everything asked for worked, 1 otherwise."""
    if "ldap" not in settings.auth.backends:
        raise ApplianceError("[auth] backend does not include ldap: nothing to test")
    verifier = ldap_backend(settings)
    print(f"servers: {' '.join(settings.ldap.servers)}", file=out)
    # A lookup binds the search account first; an unknown name still proves the bind worked.
    probe = user or "luigi-appliance-ldap-test-probe"
    if not verifier.check_username(probe):
        print(f"user {probe!r}: refused by [ldap] username_pattern {settings.ldap.username_pattern.pattern}",
              file=out)
        return 1
    found = verifier.lookup(probe)
    print(f"search account: bound as {settings.ldap.bind_dn or '(anonymous)'}", file=out)
    if user is None:
        return 0
    if found is None:
        print(f"user {user!r}: not found under {settings.ldap.user_base} with {settings.ldap.user_filter}", file=out)
        return 1
    principal = verifier.principal_for(user, found)
    print(f"user: {found.dn}", file=out)
    print(f"groups: {', '.join(sorted(found.groups)) or '(none)'}", file=out)
    print(f"role: {principal.role if principal else '(none: no group maps to a role in [roles])'}", file=out)
    families = principal.families if principal else ()
    print(f"task families: {'(unrestricted)' if families is None else ', '.join(families) or '(none)'}", file=out)
    if password is None:
        return 0 if principal else 1
    ok = verifier.verify(user, password()) is not None
    print(f"password: {'accepted' if ok else 'refused'}", file=out)
    return 0 if ok and principal else 1


def lookup_principal(settings: Settings, name: str) -> Principal:
    """The principal a name would get, from the configured backends, without a password."""
    for backend in settings.auth.backends:
        # Built one at a time: a name the users file knows never waits for the directory.
        principal = account_backend(backend, settings).principal(name)
        if principal is not None:
            return principal
    raise ApplianceError(f"no account {name!r} with a role in the configured backends "
                         f"({', '.join(settings.auth.backends)})")


def issue_token(settings: Settings, name: str) -> str:
    tokens = TokenService(keys_file(settings), settings.tokens.ttl, create=False)
    return tokens.issue(lookup_principal(settings, name)).token


def rotate_key(settings: Settings) -> str:
    path = keys_file(settings)
    count = rotate_keys(path)
    return (f"new signing key at the top of {path} ({count} key(s) kept: tokens signed with the "
            "older ones stay valid until they expire); reload the scheduler to use it")
