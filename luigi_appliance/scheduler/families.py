"""get_work hands out only tasks of families the caller may run (see server/task_access.py for
the rules on every other call)."""

from __future__ import annotations

from typing import Any

from luigi_appliance.auth.context import current_caller
from luigi_appliance.auth.groups import family_allowed
from luigi_appliance.luigi_internals.scheduler import LuigiScheduler


def caller_may_run(family: str) -> bool:
    """Whether the principal of the RPC being served may run tasks of ``family``. Outside a
    request (the scheduler's own calls) there is no principal to restrict."""
    caller = current_caller.get()
    return caller is None or family_allowed(family, caller.principal.families)


class FamilyScoped(LuigiScheduler):
    """A scheduler whose get_work never hands out a task of a family the caller may not run."""

    def may_schedule(self, task: Any) -> bool:
        # A task refused here is skipped, so it also holds no greedy reservation against this
        # caller: that only affects resource fairness between principals, never who gets the task.
        return super().may_schedule(task) and caller_may_run(task.family or "")
