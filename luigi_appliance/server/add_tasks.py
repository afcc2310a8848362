"""``POST /api/add_tasks``: many add_task calls in one round trip, each checked and applied as one.

A worker scheduling a graph of 100k tasks otherwise makes 100k HTTPS round trips before its first
task runs. ``data`` is ``{"worker": "<worker id>", "tasks": [<add_task's arguments>, ...]}``, each
task without a worker id of its own (the batch's applies to all), at most
``rpc_arguments.MAX_BATCH_TASKS`` of them.

All or nothing: every task is checked first, with add_task's checks (role, arguments, task-family
allowlist by the scheduler's record, then the worker binding); one refusal refuses the call with
nothing applied, and the reason names the first refused task. Only then is each task applied,
in order, with the scheduler's own add_task, as luigi's RPC handler would call it (history and
cycle detection included). The answer is ``{"response": {"tasks": <count applied>, "held": [...]}}``:
``held`` lists the tasks of the batch that await approval (scheduler/approval_gate.py), each as
``{"task_id", "approval_request", "summary"}``, as add_task answers them one by one.

Audit: one line for the call (method ``add_tasks``, the count, and for a refusal the first refused
task), and one ``add_task`` line with ``via: add_tasks`` per task applied.

A scheduler without this method (luigi's luigid, an older appliance) answers 404: the appliance's
client then falls back to one add_task per task (client/remote.py).
"""

from __future__ import annotations

import logging
from typing import Any

from luigi_appliance import policy
from luigi_appliance.server.guard import GuardMixin
from luigi_appliance.server.rpc_access import BadArguments, parse_arguments
from luigi_appliance.server.rpc_arguments import batch_task_name, check_batch

log = logging.getLogger(__name__)

METHOD = "add_tasks"
ADD_TASKS_PATTERN = r"/api/add_tasks"


class _Refused(Exception):
    def __init__(self, status: int, reason: str, task: dict[str, Any] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.task = task


class AddTasksHandler(GuardMixin):
    """The guard has authenticated the caller and checked the route (POST, same origin)."""

    def post(self) -> None:
        assert self.principal is not None  # the route has a role: the guard authenticated
        try:
            arguments = parse_arguments(self.get_argument("data", default="{}"))
        except BadArguments as exc:
            self.send_error(exc.status, reason_text=str(exc))
            return
        try:
            tasks = self._checked(arguments)
        except _Refused as refusal:
            log.warning("Refused RPC %s for %s: %s", METHOD, self.principal.name, refusal.reason)
            given = arguments.get("tasks")
            self.guard.rpc_access.record_batch(self.principal, self._source, arguments.get("worker"),
                                               len(given) if isinstance(given, list) else 0, refusal.status,
                                               refusal.task)
            self.send_error(refusal.status, reason_text=refusal.reason)
            return
        held = self._apply(arguments["worker"], tasks)
        self.write({"response": {"tasks": len(tasks), "held": held}})

    @property
    def _source(self) -> str:
        return self.request.remote_ip or ""

    def _checked(self, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        """The tasks as add_task arguments, once every one of them passed add_task's checks."""
        assert self.principal is not None
        rule = policy.RPC_METHODS[METHOD]
        if self.principal.role < rule.role:
            raise _Refused(403, f"method {METHOD} needs role {rule.role}")
        try:
            tasks = check_batch(arguments)
        except BadArguments as exc:
            raise _Refused(exc.status, str(exc)) from None
        refused = self.guard.rpc_access.batch_refusal(self.principal, arguments["worker"], tasks)
        if refused is None:
            return tasks
        index, reason = refused
        if index is None:
            raise _Refused(403, f"{METHOD}: {reason}; nothing in the batch was applied")
        raise _Refused(403, f"{METHOD}: {batch_task_name(index, len(tasks), tasks[index])}: {reason}; "
                            "nothing in the batch was applied", tasks[index])

    def _apply(self, worker: str, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply each task; the ones the scheduler holds for approval."""
        access = self.guard.rpc_access
        assert access.scheduler is not None  # batch_refusal refuses without one
        applied = 0
        held: list[dict[str, Any]] = []
        try:
            for task in tasks:
                answer = access.scheduler.add_task(**task)
                applied += 1
                if isinstance(answer, dict) and "approval_request" in answer:
                    held.append({"task_id": task["task_id"], "approval_request": answer["approval_request"],
                                 "summary": answer.get("summary")})
                access.record(self.principal, self._source, "add_task", task, 200, via=METHOD)
        finally:
            # A scheduler error part way (a 500, as luigi's handler would answer) leaves the tasks
            # before it applied, as the same add_task calls one by one would.
            access.record_batch(self.principal, self._source, worker, len(tasks),
                                200 if applied == len(tasks) else 500)
        return held


def routes() -> list[tuple[str, type, dict]]:
    return [(ADD_TASKS_PATTERN, AddTasksHandler, {})]
