"""luigi's Scheduler from the inside: its task records, its state tuple and its scheduling hook."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import luigi.scheduler


@dataclass(frozen=True)
class StateSize:
    """How much a restored luigi state holds."""

    tasks: int
    workers: int


def task_record(scheduler: luigi.scheduler.Scheduler, task_id: str) -> Any | None:
    """The scheduler's own record of ``task_id`` (luigi's scheduler Task), or None."""
    return scheduler._state.get_task(task_id)


def is_live_worker(scheduler: luigi.scheduler.Scheduler, worker_id: str) -> bool:
    """Whether luigi still counts ``worker_id`` among its active workers (not pruned yet)."""
    return worker_id in scheduler._state._active_workers


def luigi_state(scheduler: luigi.scheduler.Scheduler) -> Any:
    """luigi's state as its own SimpleTaskState.dump() would pickle it."""
    return scheduler._state.get_state()


def install_state(scheduler: luigi.scheduler.Scheduler, state: Any) -> StateSize:
    """Install ``state`` (a ``luigi_state`` tuple) the way SimpleTaskState.load() does, minus the
    unpickling: load() also rebuilds the by-status index, which set_state() alone leaves stale."""
    task_state = scheduler._state
    task_state.set_state(state)
    task_state._status_tasks = collections.defaultdict(dict)
    for task in task_state._tasks.values():
        task_state._status_tasks[task.status][task.id] = task
    return StateSize(len(task_state._tasks), len(task_state._active_workers))


class LuigiScheduler(luigi.scheduler.Scheduler):
    """luigi's Scheduler with public hooks for the appliance's scheduler (luigi_appliance.scheduler)."""

    def may_schedule(self, task: Any) -> bool:
        """Whether get_work may hand out ``task`` to the caller (luigi's own checks passed)."""
        return True

    def _schedulable(self, task: Any) -> bool:
        # get_work asks this of every candidate before taking it, for its own worker or, as an
        # assistant, for any runnable task.
        return super()._schedulable(task) and self.may_schedule(task)

    def task_record(self, task_id: str) -> Any | None:
        """This scheduler's record of ``task_id``, or None."""
        return task_record(self, task_id)

    def record_status(self, task: Any, status: str) -> None:
        """Set ``task``'s status as luigi's own RPCs do: also reported to the task history."""
        self._state.set_status(task, status, self._config)
        self._update_task_history(task, status)
