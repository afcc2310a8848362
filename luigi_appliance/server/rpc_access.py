"""Argument-level rules for Luigi RPCs, after the per-method role check, and their audit lines.

* Task-family allowlists: ``add_task`` (and ``add_task_batcher``) only for a family the
  principal's patterns allow, so a service account schedules only the pipelines it owns.
* Worker binding: a worker id belongs to the principal that first used it; another principal
  sending worker RPCs under that id is refused, so one account cannot act as another's worker
  (take its tasks with get_work, report them done with add_task, keep it alive with ping).
* Audit: every state-changing call, allowed or refused, is one line in the audit trail.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from luigi_appliance.audit import AuditLog
from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.groups import family_allowed
from luigi_appliance.policy import MethodRule
from luigi_appliance.server.worker_bindings import WorkerBindings

log = logging.getLogger(__name__)

_FAMILY_METHODS = {"add_task": "family", "add_task_batcher": "task_family"}


class BadArguments(ValueError):
    """The RPC's ``data`` is not a JSON object."""


def parse_arguments(data: str) -> dict[str, Any]:
    try:
        arguments = json.loads(data)
    except ValueError:
        raise BadArguments("data is not JSON") from None
    if not isinstance(arguments, dict):
        raise BadArguments("data is not a JSON object")
    return arguments


def family_of(method: str, arguments: dict[str, Any]) -> str | None:
    key = _FAMILY_METHODS.get(method)
    if key is None:
        return None
    family = arguments.get(key)
    if isinstance(family, str) and family:
        return family
    # Old clients leave family out; luigi's task ids start with the family name.
    task_id = arguments.get("task_id")
    return task_id.split("_", 1)[0] if isinstance(task_id, str) and task_id else ""


class RpcAccess:
    def __init__(self, audit: AuditLog | None = None, bindings: WorkerBindings | None = None):
        self.audit = audit
        self.bindings = bindings if bindings is not None else WorkerBindings()

    def refusal(self, principal: Principal, method: str, rule: MethodRule, arguments: dict[str, Any]) -> str | None:
        """Why this call is refused, or None when it may proceed."""
        family = family_of(method, arguments)
        if family is not None and not family_allowed(family, principal.families):
            return f"task family {family!r} is not in the allowlist of {principal.name}"
        worker = arguments.get("worker")
        if rule.role == Role.WORKER and isinstance(worker, str):
            return self.bindings.claim(worker, principal.name)
        return None

    def record(self, principal: Principal | None, source: str, method: str, arguments: dict[str, Any],
               status: int) -> None:
        if self.audit is None:
            return
        self.audit.record(
            "rpc", principal=principal.name if principal else None, source=source,
            outcome="ok" if status < 400 else f"refused:{status}", method=method,
            family=family_of(method, arguments) or arguments.get("task_family"),
            task_id=arguments.get("task_id"), worker=arguments.get("worker"),
            status=arguments.get("status") if method == "add_task" else None,
        )
