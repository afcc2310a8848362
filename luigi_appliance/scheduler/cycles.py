"""Scheduler-side detection of dependency cycles.

Stock luigi never grants a task whose dependencies close a cycle; the submitting worker ends
NOT_RUN, by default with exit code 0, and nothing says why. Here every add_task that declares
dependencies marks its task; before the next get_work answers, the pending graph reachable from
the marked tasks is searched for cycles (iteratively, linear in what it visits). Each task on a
cycle is failed with the cycle's path as its error and status message, so the visualiser and the
history show the reason and the worker stops waiting for it.
"""

from __future__ import annotations

import logging
from typing import Any

from luigi.task_status import FAILED, PENDING

from luigi_appliance.dag.cycles import cycle_path, cyclic_components
from luigi_appliance.luigi_internals.scheduler import LuigiScheduler

log = logging.getLogger(__name__)


class CycleFailing(LuigiScheduler):
    """A scheduler that fails tasks caught in a dependency cycle, with the cycle as reason."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._new_edges: set[str] = set()

    def add_task(self, task_id: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        result = super().add_task(task_id=task_id, **kwargs)
        if kwargs.get("deps") or kwargs.get("new_deps"):
            self._new_edges.add(task_id)  # type: ignore[arg-type]
        return result

    def get_work(self, *args: Any, **kwargs: Any) -> Any:
        if self._new_edges:
            self.fail_cycles()
        return super().get_work(*args, **kwargs)

    def _pending_deps(self, task_id: str) -> list[str]:
        # The search visits every pending task reachable from the marked ones: look them up in
        # luigi's dict directly rather than through task_record, a third of its cost.
        tasks = self.task_records()
        task = tasks.get(task_id)
        if task is None or task.status != PENDING:
            return []
        return [dep for dep in task.deps if (t := tasks.get(dep)) is not None and t.status == PENDING]

    def fail_cycles(self) -> list[list[str]]:
        """Fail every pending task on a cycle reachable from tasks given new dependencies."""
        starts = sorted(self._new_edges)
        self._new_edges.clear()
        cycles = []
        for component in cyclic_components(starts, self._pending_deps):
            path = cycle_path(component, self._pending_deps)
            message = "dependency cycle: " + " -> ".join(path)
            log.error("Failing %d task(s) caught in a %s", len(component), message)
            for task_id in component:
                task = self.task_record(task_id)
                assert task is not None  # a cycle is found among known pending tasks only
                task.expl = message
                task.status_message = message
                self.record_status(task, FAILED)
            cycles.append(path)
        return cycles
