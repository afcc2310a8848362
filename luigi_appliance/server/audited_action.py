"""The appliance's own state-changing routes (worker release, user unlock): every attempt is one
audit line, also an attempt the guard refuses for the caller's role, as refused RPCs are."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from luigi_appliance.server.guard import GuardMixin


def body_string(body: bytes, name: str) -> str | None:
    """The string ``name`` of a JSON object body, or None (not JSON, not an object, not a string)."""
    try:
        arguments = json.loads(body)
    except ValueError:
        return None
    value = arguments.get(name) if isinstance(arguments, dict) else None
    return value if isinstance(value, str) else None


class AuditedAction(GuardMixin):
    """A handler whose every request ends in exactly one ``event`` line of the audit trail."""

    event: ClassVar[str]
    _audited = False

    def refused_fields(self) -> dict[str, Any]:
        """What the line of a request the guard refused names (read from the body)."""
        return {}

    def audit(self, outcome: str, **fields: Any) -> None:
        self._audited = True
        if self.guard.audit is not None:
            assert self.principal is not None  # the routes have a role: the guard authenticated
            self.guard.audit.record(self.event, principal=self.principal.name, source=self.request.remote_ip or "",
                                    outcome=outcome, **fields)

    def on_finish(self) -> None:
        # Refused by the guard before post() ran (a role below the route's): audited here. An
        # unauthenticated caller has no principal; its failed login is audited as such.
        if not self._audited and self.principal is not None:
            self.audit(f"refused:{self.get_status()}", **self.refused_fields())
        super().on_finish()
