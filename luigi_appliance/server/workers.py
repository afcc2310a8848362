"""``POST /appliance/workers/release``: an operator frees a worker id bound to a principal.

A worker id stays bound to the principal that first used it (also across restarts, through the
snapshot), so an id taken by the wrong account is only freed here. Body: ``{"worker": "<id>"}``.
Answers ``{"worker": ..., "released_from": <principal>}``, or 404 when the id is not bound.
Every attempt is one ``worker_release`` line in the audit trail.
"""

from __future__ import annotations

import json
import logging

from luigi_appliance.server.guard import GuardMixin

log = logging.getLogger(__name__)

RELEASE_PATTERN = r"/appliance/workers/release"


def _worker_id(body: bytes) -> str | None:
    try:
        arguments = json.loads(body)
    except ValueError:
        return None
    worker = arguments.get("worker") if isinstance(arguments, dict) else None
    return worker if isinstance(worker, str) and worker else None


class WorkerReleaseHandler(GuardMixin):
    """The guard has checked the role (operator) and the origin already."""

    def post(self) -> None:
        assert self.principal is not None  # the route has a role: the guard authenticated
        worker = _worker_id(self.request.body)
        if worker is None:
            self._audit(None, "refused:400", None)
            self.send_error(400, reason_text='expected a JSON object {"worker": "<worker id>"}')
            return
        owner = self.guard.rpc_access.bindings.release(worker)
        if owner is None:
            self._audit(worker, "not_bound", None)
            self.send_error(404, reason_text="worker id is not bound to any principal")
            return
        log.info("Worker id %r released from %s by %s", worker[:200], owner, self.principal.name)
        self._audit(worker, "ok", owner)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"worker": worker, "released_from": owner}))

    def _audit(self, worker: str | None, outcome: str, owner: str | None) -> None:
        if self.guard.audit is not None:
            assert self.principal is not None
            self.guard.audit.record("worker_release", principal=self.principal.name,
                                    source=self.request.remote_ip or "", outcome=outcome, worker=worker, owner=owner)


def routes() -> list[tuple[str, type, dict]]:
    return [(RELEASE_PATTERN, WorkerReleaseHandler, {})]
