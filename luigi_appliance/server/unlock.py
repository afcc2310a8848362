"""``POST /appliance/users/unlock``: an administrator lifts a name's login lockout.

Failed-login counters live in the scheduler's memory only (auth/throttle.py), so without this a
locked-out account waits for ``[auth] lockout`` or a restart. Body: ``{"user": "<name>"}``.
Answers ``{"user", "was_locked", "addresses_unlocked", "addresses_still_locked"}`` (200 also
when nothing was locked: the call is idempotent). Every attempt, also one the guard refuses for
the caller's role, is one ``user_unlock`` line in the audit trail.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from luigi_appliance.auth.basic import BasicAuthenticator
from luigi_appliance.auth.names import name_problem
from luigi_appliance.auth.registry import scheme_of
from luigi_appliance.auth.throttle import LoginThrottle
from luigi_appliance.server.audited_action import AuditedAction, body_string

log = logging.getLogger(__name__)

UNLOCK_PATTERN = r"/appliance/users/unlock"


class UserUnlockHandler(AuditedAction):
    """The guard has checked the role (admin) and the origin already."""

    event = "user_unlock"

    def refused_fields(self) -> dict[str, Any]:
        return {"user": body_string(self.request.body, "user")}

    def initialize(self, throttle: LoginThrottle) -> None:
        self._throttle = throttle

    def post(self) -> None:
        assert self.principal is not None  # the route has a role: the guard authenticated
        user = body_string(self.request.body, "user")
        problem = "missing" if user is None else name_problem(user)
        if user is None or problem is not None:
            self.audit("refused:400", user=None)
            self.send_error(400, reason_text=f'expected a JSON object {{"user": "<user name>"}}: user name {problem}')
            return
        cleared = self._throttle.clear(user)
        freed = bool(cleared.name_was_locked or cleared.addresses)
        if freed:
            log.info("Login lockout of %r lifted by %s (addresses: %s)", user[:200], self.principal.name,
                     ", ".join(cleared.addresses) or "none")
        self.audit("ok" if freed else "not_locked", user=user, addresses=list(cleared.addresses),
                   still_locked=list(cleared.still_locked))
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"user": user, "was_locked": freed, "addresses_unlocked": list(cleared.addresses),
                                "addresses_still_locked": list(cleared.still_locked)}))


def routes(authenticators: list[Any]) -> list[tuple[str, type, dict]]:
    """Served only when logins are throttled: with the password scheme (auth/basic.py)."""
    passwords = scheme_of(authenticators, BasicAuthenticator)
    if passwords is None or passwords.throttle is None:
        return []
    return [(UNLOCK_PATTERN, UserUnlockHandler, {"throttle": passwords.throttle})]
