"""Argument-level rules for Luigi RPCs, after the per-method role check, and their audit lines.

* Arguments: their shape and size (rpc_arguments.py), refused with 400 or 413.
* Task families and task-scoped methods, by the scheduler's own record of the task
  (task_access.py): a principal acts only on the families its patterns allow, whatever family it
  declares, and only on the tasks its workers run or added.
* Approvals: a task that awaits approval may not be reported running or finished
  (scheduler/approval_gate.py holds it back from get_work and opens the requests).
* Worker binding: a worker id belongs to the principal that first used it; another principal
  sending worker RPCs under that id is refused, so one account cannot act as another's worker
  (take its tasks with get_work, report them done with add_task, keep it alive with ping).
* Audit: every state-changing call, allowed or refused, is one line in the audit trail.
* add_tasks (server/add_tasks.py): add_task's checks for each of its tasks, all before any applies.
"""

from __future__ import annotations

import logging
from typing import Any

from luigi_appliance.audit import AuditLog
from luigi_appliance.auth import Principal, Role
from luigi_appliance.policy import MethodRule
from luigi_appliance.server import task_access
from luigi_appliance.server.rpc_arguments import BadArguments, check_arguments, parse_arguments
from luigi_appliance.server.worker_bindings import WorkerBindings

log = logging.getLogger(__name__)

__all__ = ["BadArguments", "RpcAccess", "parse_arguments"]


class RpcAccess:
    """The argument-level rules of one scheduler; ``attach`` it to that scheduler before use."""

    def __init__(self, audit: AuditLog | None = None, bindings: WorkerBindings | None = None):
        self.audit = audit
        self.bindings = bindings if bindings is not None else WorkerBindings()
        self.scheduler: Any | None = None

    def attach(self, scheduler: Any) -> RpcAccess:
        """Decide by ``scheduler``'s records of tasks (build_app attaches the one it serves)."""
        self.scheduler = scheduler
        return self

    def check_arguments(self, method: str, arguments: dict[str, Any]) -> None:
        """Raise BadArguments (with its HTTP status) when luigi's ``method`` cannot take these."""
        check_arguments(method, arguments)

    def refusal(self, principal: Principal, method: str, rule: MethodRule, arguments: dict[str, Any]) -> str | None:
        """Why this call is refused, or None when it may proceed."""
        if method in task_access.TASK_ARGUMENT or method in task_access.DECLARED_FAMILY:
            if self.scheduler is None:
                return "the access rules have no scheduler to ask about the task"  # fail closed
            task = self._task(method, arguments)
            reason = (task_access.family_refusal(principal, method, arguments, task_access.recorded_family(task))
                      or task_access.runner_refusal(principal, method, arguments, task, self.bindings.owner))
            if reason is not None:
                return reason
            reason = self._approval_refusal(principal, method, arguments)
            if reason is not None:
                return reason
        worker = arguments.get("worker")
        if rule.role == Role.WORKER and isinstance(worker, str):
            return self.bindings.claim(worker, principal.name)
        return None

    def batch_refusal(self, principal: Principal, worker: str,
                      tasks: list[dict[str, Any]]) -> tuple[int | None, str] | None:
        """Why add_tasks may not apply ``tasks`` (the index of the first refused task, when one
        is, and the reason), or None. The same checks as ``refusal`` for each task's add_task,
        all of them before anything is applied; the worker id is claimed only once all passed."""
        if self.scheduler is None:
            return None, "the access rules have no scheduler to ask about the tasks"  # fail closed
        scheduler = self.scheduler

        def family_of(task_id: Any) -> str:
            return task_access.recorded_family(task_access.recorded_task(scheduler, task_id))

        refused = task_access.batch_family_refusal(principal, tasks, family_of)
        if refused is not None:
            return refused
        # Each entry as the ones before it in the batch will have left the scheduler: a task an
        # earlier entry submits and the gate will hold cannot be reported done by a later one.
        held_in_batch: set[str] = set()
        would_hold = getattr(scheduler, "would_hold", None)
        for index, task in enumerate(tasks):
            held = self._approval_refusal(principal, "add_task", task, frozenset(held_in_batch))
            if held is not None:
                return index, held
            if would_hold is not None and would_hold(principal, task):
                held_in_batch.add(task["task_id"])
        reason = self.bindings.claim(worker, principal.name)
        return None if reason is None else (None, reason)

    def _approval_refusal(self, principal: Principal, method: str, arguments: dict[str, Any],
                          held_in_batch: frozenset[str] = frozenset()) -> str | None:
        """A task that awaits approval may not be reported as running or finished (scheduler/approval_gate.py)."""
        check = getattr(self.scheduler, "approval_refusal", None)
        return check(principal, method, arguments, held_in_batch) if check is not None else None

    def _task(self, method: str, arguments: dict[str, Any]) -> Any | None:
        return task_access.recorded_task(self.scheduler, arguments.get(task_access.TASK_ARGUMENT.get(method, "")))

    def _audited_families(self, method: str, arguments: dict[str, Any]) -> tuple[str | None, str | None]:
        """(the task's family, the declared family when it differs): the scheduler's record first."""
        declared = task_access.declared_family(method, arguments) or None
        task = self._task(method, arguments) if self.scheduler is not None else None
        recorded = task.family if task is not None and task.family else None
        if recorded is None:
            return declared, None
        return recorded, declared if declared not in (None, recorded) else None

    def record(self, principal: Principal | None, source: str, method: str, arguments: dict[str, Any],
               status: int, **fields: Any) -> None:
        """One audit line for a state-changing call (``fields``: more to write, when not None)."""
        if self.audit is None:
            return
        family, declared = self._audited_families(method, arguments)
        self.audit.record(
            "rpc", principal=principal.name if principal else None, source=source,
            outcome="ok" if status < 400 else f"refused:{status}", method=method,
            family=family, declared_family=declared,
            task_id=arguments.get(task_access.TASK_ARGUMENT.get(method, "task_id")),
            worker=arguments.get("worker"),
            status=arguments.get("status") if method == "add_task" else None,
            **fields,
        )

    def record_batch(self, principal: Principal | None, source: str, worker: Any, count: int, status: int,
                     refused_task: dict[str, Any] | None = None) -> None:
        """The audit line of one add_tasks call; a refused one names its first refused task. Each
        task a call applies has an add_task line of its own (``record`` with ``via="add_tasks"``)."""
        if self.audit is None:
            return
        family, declared = self._audited_families("add_task", refused_task) if refused_task else (None, None)
        self.audit.record(
            "rpc", principal=principal.name if principal else None, source=source,
            outcome="ok" if status < 400 else f"refused:{status}", method="add_tasks", tasks=count,
            worker=worker if isinstance(worker, str) else None, family=family, declared_family=declared,
            task_id=refused_task.get("task_id") if refused_task else None,
        )
