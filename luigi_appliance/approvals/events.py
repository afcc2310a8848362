"""Where approval events go: the audit trail, the log and, for a new request, the notification
command. Every event names its request id, so the request, each decision and the task's run
and outcome are linked in the trail."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from luigi_appliance.approvals.book import ApprovalRequest

log = logging.getLogger("luigi_appliance.approvals")

# Event names (the audit line's outcome) and the level they are logged at.
LEVELS = {
    "requested": logging.INFO,
    "approval": logging.INFO,
    "approved": logging.INFO,
    "break_glass": logging.WARNING,
    "denied": logging.INFO,
    "expired": logging.WARNING,
    "applied": logging.INFO,
    "run_started": logging.INFO,
    "run_done": logging.INFO,
    "run_failed": logging.INFO,
}


class AuditSink(Protocol):
    def record(self, event: str, *, principal: str | None, source: str, outcome: str, **fields: Any) -> None: ...


class Notifier(Protocol):
    def request_opened(self, request: ApprovalRequest) -> None: ...


class ApprovalEvents:
    """Audit, log, notify. ``audit`` and ``notifier`` are set by serve once they exist."""

    def __init__(self, audit: AuditSink | None = None, notifier: Notifier | None = None):
        self.audit = audit
        self.notifier = notifier
        self._muted = 0

    @contextmanager
    def muted(self) -> Iterator[None]:
        """Emit nothing in the body: a standby replaying the leader's calls (ha/replay.py), whose
        events the leader already logged, audited and notified."""
        self._muted += 1
        try:
            yield
        finally:
            self._muted -= 1

    def emit(self, event: str, request: ApprovalRequest, *, principal: str | None, source: str = "",
             comment: str | None = None, **fields: Any) -> None:
        if self._muted:
            return
        log.log(LEVELS.get(event, logging.INFO), "Approval %s %s: %s %s of %s by %s%s", request.id, event,
                request.action, request.family, request.task_id, principal or "the scheduler",
                f": {comment}" if comment else "")
        if self.audit is not None:
            self.audit.record("approval", principal=principal, source=source, outcome=event, request=request.id,
                              task_id=request.task_id, family=request.family, action=request.action,
                              requester=request.requester, requester_kind=request.requester_kind,
                              state=request.state, comment=comment, **fields)
        if event == "requested" and self.notifier is not None:
            self.notifier.request_opened(request)
