"""Authorization by the scheduler's own record of a task, never by what the caller says about it.

* Families: for an argument that names a task the scheduler knows, the family checked against
  the principal's allowlist is the one in the scheduler's record; a declared ``family`` that
  disagrees with it is refused (for everyone: luigi would silently ignore it). Only for a task
  the scheduler does not know yet (or knows only as a dependency placeholder, without a family)
  does the declared family count, and a restricted principal must then declare one, and the task
  id must start with it as luigi's ids do (``Family_params_hash``): otherwise an id another team's
  pipeline will use could be taken under an allowed family.
* Task-scoped worker methods without a worker argument (status message, progress, running
  resources, scheduler message responses, statistics) are for the principal whose worker runs
  the task, or, while no worker runs it, for the principals whose workers added it. Both come
  from luigi's record (``worker_running``, ``workers``) and the worker bindings.
* ``get_work`` (also as an assistant) hands out only tasks of families the caller may run
  (luigi_appliance/scheduler/families.py).

Reads (``fetch_error``, ``get_task_status_message``, ``dep_graph``, ...) are not restricted:
viewers see every task in the visualiser anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.groups import family_allowed
from luigi_appliance.luigi_internals.scheduler import task_record

# State-changing methods and their argument that names an existing task.
TASK_ARGUMENT: dict[str, str] = {
    "add_task": "task_id",
    "add_scheduler_message_response": "task_id",
    "decrease_running_task_resources": "task_id",
    "forgive_failures": "task_id",
    "mark_as_done": "task_id",
    "re_enable_task": "task_id",
    "report_task_statistics": "task_id",
    "send_scheduler_message": "task",
    "set_task_progress_percentage": "task_id",
    "set_task_status_message": "task_id",
}
# Methods whose caller declares a family: what counts for a task the scheduler does not know yet.
DECLARED_FAMILY: dict[str, str] = {"add_task": "family", "add_task_batcher": "task_family"}
# Worker methods about one task that carry no worker id to check the binding of.
RUNNER_METHODS = frozenset({
    "add_scheduler_message_response", "decrease_running_task_resources", "report_task_statistics",
    "set_task_progress_percentage", "set_task_status_message",
})


def recorded_task(scheduler: Any, task_id: Any) -> Any | None:
    """The scheduler's own record of ``task_id`` (luigi's Task), or None."""
    if not isinstance(task_id, str):
        return None
    return task_record(scheduler, task_id)


def declared_family(method: str, arguments: dict[str, Any]) -> str:
    family = arguments.get(DECLARED_FAMILY.get(method, ""))
    return family if isinstance(family, str) else ""


def recorded_family(task: Any | None) -> str:
    """The family in a task record; "" for no record or a dependency placeholder."""
    return task.family if task is not None and task.family else ""


def family_refusal(principal: Principal, method: str, arguments: dict[str, Any], recorded: str) -> str | None:
    """Why ``principal`` may not make this call given the task's ``recorded`` family, or None."""
    task_id = arguments.get(TASK_ARGUMENT.get(method, ""))
    declared = declared_family(method, arguments)
    restricted = principal.families is not None
    if recorded:
        if declared and declared != recorded:
            return f"{method} declares family {declared!r} but task {task_id!r} is a {recorded!r}"
        family = recorded
    elif method in DECLARED_FAMILY:
        family = declared
        if restricted and not family:
            return f"{method} without {DECLARED_FAMILY[method]}: {principal.name} must name the task's family"
        if restricted and method == "add_task" and not (isinstance(task_id, str) and task_id.startswith(family + "_")):
            return f"task id {task_id!r} does not start with its family {family!r} and an underscore"
    elif restricted:
        # About a task the scheduler knows no family of: nothing to check against (fail closed).
        return f"task {task_id!r} is unknown to the scheduler"
    else:
        return None
    if not family_allowed(family, principal.families):
        return f"task family {family!r} is not in the allowlist of {principal.name}"
    return None


def batch_family_refusal(principal: Principal, tasks: list[dict[str, Any]],
                         recorded: Callable[[Any], str]) -> tuple[int, str] | None:
    """The first of add_tasks' ``tasks`` that ``principal`` may not add, and why, or None.

    Every task is checked before any is applied, against the scheduler's records (``recorded``:
    task id -> family) as the tasks before it in the batch will have left them: luigi gives a
    task without a family the one its add_task declares, so a later task of the batch is checked
    against that family, exactly as a sequence of add_task calls would be.
    """
    declared_here: dict[str, str] = {}
    for index, arguments in enumerate(tasks):
        task_id = arguments.get("task_id")
        family = recorded(task_id) or (declared_here.get(task_id, "") if isinstance(task_id, str) else "")
        reason = family_refusal(principal, "add_task", arguments, family)
        if reason is not None:
            return index, reason
        declared = declared_family("add_task", arguments)
        if not family and declared and isinstance(task_id, str):
            declared_here[task_id] = declared
    return None


def runner_refusal(principal: Principal, method: str, arguments: dict[str, Any], task: Any | None,
                   owner: Callable[[str], str | None]) -> str | None:
    """Why ``principal`` may not make a task-scoped worker call on ``task``, or None."""
    if method not in RUNNER_METHODS or principal.role >= Role.OPERATOR:
        return None
    task_id = arguments.get(TASK_ARGUMENT[method])
    if task is None:
        return f"task {task_id!r} is unknown to the scheduler"
    if task.worker_running:
        if owner(task.worker_running) == principal.name:
            return None
        return f"task {task_id!r} is run by a worker of another principal"
    if any(owner(worker) == principal.name for worker in task.workers):
        return None
    return f"task {task_id!r} was added by no worker of {principal.name}"
