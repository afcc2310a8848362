"""``POST /appliance/workers/release``: an operator frees a worker id bound to a principal.

A worker id stays bound to the principal that first used it (also across restarts, through the
snapshot), so an id taken by the wrong account is only freed here. Body: ``{"worker": "<id>"}``.
Answers ``{"worker": ..., "released_from": <principal>}``, or 404 when the id is not bound.
Every attempt, also one the guard refuses for the caller's role, is one ``worker_release`` line
in the audit trail.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from luigi_appliance.server.audited_action import AuditedAction, body_string

log = logging.getLogger(__name__)

RELEASE_PATTERN = r"/appliance/workers/release"


def _worker_id(body: bytes) -> str | None:
    return body_string(body, "worker") or None  # an empty id is no id


class WorkerReleaseHandler(AuditedAction):
    """The guard has checked the role (operator) and the origin already."""

    event = "worker_release"

    def refused_fields(self) -> dict[str, Any]:
        return {"worker": _worker_id(self.request.body), "owner": None}

    def post(self) -> None:
        assert self.principal is not None  # the route has a role: the guard authenticated
        worker = _worker_id(self.request.body)
        if worker is None:
            self.audit("refused:400", worker=None, owner=None)
            self.send_error(400, reason_text='expected a JSON object {"worker": "<worker id>"}')
            return
        owner = self.guard.rpc_access.bindings.release(worker)
        if owner is None:
            self.audit("not_bound", worker=worker, owner=None)
            self.send_error(404, reason_text="worker id is not bound to any principal")
            return
        log.info("Worker id %r released from %s by %s", worker[:200], owner, self.principal.name)
        self.audit("ok", worker=worker, owner=owner)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"worker": worker, "released_from": owner}))


def routes() -> list[tuple[str, type, dict]]:
    return [(RELEASE_PATTERN, WorkerReleaseHandler, {})]
