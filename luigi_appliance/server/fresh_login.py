"""Decisions that need the decider to have just proved who they are (approvals, break-glass).

Fresh means: a password in this very request (HTTP Basic, checked by the password backends), or
a browser session whose login (password form or single sign-on) is at most ``[approvals]
fresh_login`` old. Not fresh: a bearer token (it may be a stored credential of a script or an
agent, and an agent must not approve its own work) and a client certificate (a key on disk).
"""

from __future__ import annotations

from typing import Any

from luigi_appliance.auth import Principal
from luigi_appliance.auth.certificate import BACKEND as CERTIFICATE_BACKEND
from luigi_appliance.auth.local import BACKEND as LOCAL_BACKEND
from luigi_appliance.auth.registry import scheme_of
from luigi_appliance.auth.session import Session, SessionAuthenticator
from luigi_appliance.auth.tokens import TOKEN_BACKEND_PREFIX

# The account backends that check a password on each HTTP Basic request (auth/local.py, ldap.py).
PASSWORD_BACKENDS = frozenset({LOCAL_BACKEND, "ldap"})
# The Application setting holding the freshness window in seconds (server/app.py sets it).
SETTING = "appliance_fresh_login"


def principals_session(handler: Any, principal: Principal | None) -> Session | None:
    """The browser session ``principal`` was authenticated by on this request, or None (HTTP
    Basic, a token, a certificate: no session, or a session cookie of someone else)."""
    sessions = scheme_of(handler.guard.authenticators, SessionAuthenticator)
    found = sessions.lookup(handler.request) if sessions is not None else None
    if found is None or principal is None or found[1].principal is not principal:
        return None
    return found[1]


def fresh_refusal(handler: Any, principal: Principal) -> str | None:
    """Why the request ``handler`` serves is not a fresh login of ``principal``, or None.

    An allowlist: a browser session at most ``[approvals] fresh_login`` old, or a password
    checked in this very request by a password backend. Anything else (a bearer token, a client
    certificate, a scheme added later) is not fresh until this says otherwise."""
    session = principals_session(handler, principal)
    if session is not None:
        sessions = scheme_of(handler.guard.authenticators, SessionAuthenticator)
        assert sessions is not None  # the session came from it
        window = float(handler.application.settings.get(SETTING, 900.0))
        age = sessions.store.now() - session.created
        if age > window:
            return (f"this decision needs a fresh login: you signed in {age / 60:.0f} minutes ago "
                    f"(at most {window / 60:.0f} allowed); log out and sign in again")
        return None
    if principal.backend in PASSWORD_BACKENDS:
        return None  # HTTP Basic: the password was checked for this request
    if principal.backend.startswith(TOKEN_BACKEND_PREFIX):
        return ("this decision needs a fresh login: give your password (or sign in again in the browser), "
                "not a bearer token")
    if principal.backend == CERTIFICATE_BACKEND:
        return "this decision needs a fresh login: give your password, not a client certificate"
    return f"this decision needs a fresh login: a password or a browser login, not {principal.backend}"
