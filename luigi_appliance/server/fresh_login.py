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
from luigi_appliance.auth.registry import scheme_of
from luigi_appliance.auth.session import SessionAuthenticator
from luigi_appliance.auth.tokens import TOKEN_BACKEND_PREFIX

# The Application setting holding the freshness window in seconds (server/app.py sets it).
SETTING = "appliance_fresh_login"


def fresh_refusal(handler: Any, principal: Principal) -> str | None:
    """Why the request ``handler`` serves is not a fresh login of ``principal``, or None."""
    if principal.backend.startswith(TOKEN_BACKEND_PREFIX):
        return ("this decision needs a fresh login: give your password (or sign in again in the browser), "
                "not a bearer token")
    if principal.backend == CERTIFICATE_BACKEND:
        return "this decision needs a fresh login: give your password, not a client certificate"
    sessions = scheme_of(handler.guard.authenticators, SessionAuthenticator)
    found = sessions.lookup(handler.request) if sessions is not None else None
    if sessions is None or found is None or found[1].principal is not principal:
        return None  # not the session's principal: HTTP Basic, a password in this request
    session = found[1]
    window = float(handler.application.settings.get(SETTING, 900.0))
    age = sessions.store.now() - session.created
    if age > window:
        return (f"this decision needs a fresh login: you signed in {age / 60:.0f} minutes ago "
                f"(at most {window / 60:.0f} allowed); log out and sign in again")
    return None
