"""Scheduler-side detection of dependency cycles.

Stock luigi never grants a task whose dependencies close a cycle; the submitting worker ends
NOT_RUN, by default with exit code 0, and nothing says why. Here every add_task that declares
dependencies marks its task; before the next get_work answers, each pending task on a cycle
reachable (through pending tasks) from the marked ones is failed with the cycle's path as its
error and status message, so the visualiser and the history show the reason and the worker stops
waiting for it.

Searching everything the marked tasks reach costs the whole pending graph on the first get_work
after a large graph is added. So the scheduler keeps ``_on_cycles``: pending tasks found on a
cycle, such that every cycle of the pending graph has one of them. A cycle appears only when an
edge of it does, and an edge (a task, a dependency, both PENDING) appears only when a task's deps
change (add_task) or a task enters PENDING; at the end of each add_task (and before each search)
every task doing either since the last look is asked whether it is on a cycle now
(``_on_cycle``), a search from it over its dependencies and its dependants in turns that stops
when either side runs out, so it costs at most twice the smaller of the two: a task added before
its dependencies (luigi's worker adds top-down) has none pending yet, one added after them
(bottom-up) has no pending dependant, and a re-add with the same deps is no change. While no such
task is known, no marked task can reach a cycle and get_work searches nothing. A known one that a
marked task reaches (searched back from it) runs the whole search as before, so what is failed,
in what order and with which message never depends on the shortcut; one that no marked task
reaches (forgive_failures can reopen a cycle without any add_task) stays known until it is failed
or no longer on a cycle.
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
        self._on_cycles: set[str] = set()
        # The PENDING entries (luigi's by-status dict keeps them in the order tasks entered
        # PENDING, and the index numbers each entry, ``_sq``) looked at so far, and the state
        # they belong to: another state installed (load, a snapshot restored) starts over.
        self._seen_entry = 0
        self._seen_state: Any = None

    def add_task(self, task_id: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        tasks = self.task_records()
        record: Any = tasks.get(task_id)  # type: ignore[arg-type]
        deps_before = None
        if record is not None:
            # new_deps grows the set in place: keep a copy to compare with
            deps_before = set(record.deps) if kwargs.get("new_deps") else record.deps
        try:
            result = super().add_task(task_id=task_id, **kwargs)
        finally:  # an add_task failing half way may have changed deps or statuses already
            self._catch_up()
            # a task already known whose deps changed (a new one entered PENDING, seen above)
            if (record is not None and record.status == PENDING and record.deps != deps_before
                    and tasks.get(task_id) is record):  # type: ignore[arg-type]
                self._note(record)
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
        starts, self._new_edges = self._new_edges, set()
        self._catch_up()
        self._on_cycles = {task_id for task_id in self._on_cycles if self._on_cycle(task_id)}
        if not self._on_cycles or not self._reached(starts):
            return []
        cycles = self._fail_reachable(sorted(starts))
        self._on_cycles = {task_id for task_id in self._on_cycles if self._on_cycle(task_id)}
        return cycles

    def _fail_reachable(self, starts: list[str]) -> list[list[str]]:
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

    def _catch_up(self) -> None:
        """Note in ``_on_cycles`` those of the tasks that entered PENDING since the last call
        that are on a cycle now."""
        tasks = self.task_records()
        pending = self.task_state.status_tasks(PENDING)
        if tasks is not self._seen_state:
            self._seen_state = tasks
            self._on_cycles = {task_id for component in cyclic_components(list(pending), self._pending_deps)
                               for task_id in component}
            self._seen_entry = max((task._sq for task in pending.values()), default=0)
            return
        seen = self._seen_entry
        for task in reversed(pending.values()):
            if task._sq <= seen:
                break
            if self._seen_entry == seen:
                self._seen_entry = task._sq
            self._note(task)

    def _note(self, task: Any) -> None:
        if task.id not in self._on_cycles and self._on_cycle(task.id):
            self._on_cycles.add(task.id)

    def _on_cycle(self, task_id: str) -> bool:
        """Whether pending ``task_id`` reaches itself through pending tasks. Its dependencies and
        its dependants are searched in turns, and the first side to run out answers no."""
        tasks = self.task_records()
        start = tasks.get(task_id)
        if start is None or start.status != PENDING:
            return False
        dependants_of = self.index.dependants_of  # type: ignore[attr-defined]
        if not _any_pending(dependants_of(task_id)) or not _any_pending(map(tasks.get, start.deps)):
            return False  # most tasks end here, on add_task's path
        down, up = [start], [start]
        seen_down, seen_up = {start}, {start}
        while down and up:
            for dep in down.pop().deps:
                task = tasks.get(dep)
                if task is None or task.status != PENDING:
                    continue
                if task is start:
                    return True
                if task not in seen_down:
                    seen_down.add(task)
                    down.append(task)
            for task in dependants_of(up.pop().id):
                if task.status != PENDING:
                    continue
                if task is start:
                    return True
                if task not in seen_up:
                    seen_up.add(task)
                    up.append(task)
        return False

    def _reached(self, starts: set[str]) -> bool:
        """Whether a pending task of ``starts`` reaches one of ``_on_cycles`` through pending
        tasks (searched back from those, over the dependants)."""
        tasks = self.task_records()
        dependants_of = self.index.dependants_of  # type: ignore[attr-defined]
        stack = [task for task_id in self._on_cycles if (task := tasks.get(task_id)) is not None]
        seen = set(stack)
        while stack:
            task = stack.pop()
            if task.id in starts:
                return True
            for dependant in dependants_of(task.id):
                if dependant.status == PENDING and dependant not in seen:
                    seen.add(dependant)
                    stack.append(dependant)
        return False


def _any_pending(tasks: Any) -> bool:
    for task in tasks:
        if task is not None and task.status == PENDING:
            return True
    return False
