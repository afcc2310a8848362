"""The scheduler's indexes, kept exact on every change a task hears of (tasks.py, workerset.py).

- ``ranked``: the schedulable tasks (PENDING, every dependency known and DONE) in get_work's
  order, with the same per worker (``WorkerRecord.ranked``) and per family. luigi sorts PENDING
  and RUNNING tasks by ``(priority, -time)`` descending with a stable sort over its by-status
  dicts, PENDING first, each in the order its tasks entered that status; the key
  ``(-priority, time, 0, entry sequence, task)`` reproduces that order exactly, ties included
  (a RUNNING task's key has 1 in third place).
- per task ``_nm``: how many of its dependencies are not DONE or not in the state, with
  ``dependants`` (dependency id -> tasks naming it, also for ids not in the state yet; the one
  task itself where there is one, as most ids have, a set of 200 bytes only for more), so a
  dependency's move to or from DONE updates its dependants in O(their number).
- per worker: the counts count_pending answers (PENDING or FAILED tasks, those with this worker
  alone, those with this worker last), the PENDING ones worker_list shows (all, this worker
  alone) and PENDING tasks with resources (is_trivial_worker).
- ``excluded``: count_pending leaves out a PENDING task whose dependencies lead, through PENDING
  tasks with dependencies, to a DISABLED task (luigi's UPSTREAM_DISABLED). Found walking back
  from the DISABLED tasks, per worker, only when some exist, and kept until a change that can
  alter it (``_recheck_excluded``): get_work's PENDING -> RUNNING of an unrelated task does not.
- for prune: luigi's prune visits every task, in the state's order, though only these can change:
  RUNNING and BATCH_RUNNING tasks (a dead worker's), DISABLED and FAILED ones (re-enabled,
  retried), tasks whose ``remove`` time has come (``removals``, a heap checked lazily) and tasks
  that may have lost their last stakeholder with no ``remove`` set (``unclaimed``: a task joining
  the state, leaving RUNNING, losing stakeholders or having ``remove`` cleared, until it gains a
  stakeholder). ``prune_candidates``
  gives those in the state's order (``_in``, the order tasks joined it), so luigi's own per-task
  steps run over them exactly as over the whole state. ``worker_tasks`` (worker id -> tasks naming
  it among workers or stakeholders, a superset) does the same for dropping a worker from tasks.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from luigi.task_status import BATCH_RUNNING, DISABLED, DONE, FAILED, PENDING, RUNNING

from luigi_appliance.scheduler.ranked import RankedSet
from luigi_appliance.scheduler.tasks import IndexedTask, adopt
from luigi_appliance.scheduler.workerset import WorkerSet

COUNTED = (PENDING, FAILED)  # the statuses count_pending counts


@dataclass(eq=False)
class WorkerRecord:
    """One worker's share of the state: over the tasks naming it among their workers."""

    tasks: int = 0
    counted: int = 0
    unique: int = 0
    last: int = 0
    with_resources: int = 0
    pending: int = 0
    pending_unique: int = 0
    ranked: RankedSet = field(default_factory=RankedSet)


@dataclass(frozen=True)
class Excluded:
    """What count_pending subtracts for one worker (its upstream-disabled tasks)."""

    counted: int = 0
    unique: int = 0
    last: int = 0


NONE_EXCLUDED = Excluded()


class SchedulingIndex:
    """Indexes over one state's tasks; every registered task's ``_ix`` is this object."""

    def __init__(self) -> None:
        self._reset({})

    def _reset(self, tasks: dict[str, Any]) -> None:
        self.tasks: dict[str, Any] = tasks
        self._entries = itertools.count(1)
        self.ranked = RankedSet()
        self.families: dict[Any, RankedSet] = {}
        self.workers: dict[str, WorkerRecord] = {}
        self.dependants: dict[str, Any] = {}
        self.disabled: dict[str, Any] = {}
        self._excluded: dict[str, Excluded] | None = None
        self._excluded_tasks: set[Any] = set()
        self._before: list[str] = []
        self._joined = itertools.count(1)
        self.unclaimed: set[Any] = set()
        self.removals: list[tuple[Any, int, Any]] = []
        self.worker_tasks: dict[str, set[Any]] = {}

    # -- queries ---------------------------------------------------------------------------

    def record(self, worker_id: str) -> WorkerRecord | None:
        return self.workers.get(worker_id)

    def tasks_of(self, worker_id: str) -> int:
        """How many tasks of the state name ``worker_id`` among their workers."""
        record = self.workers.get(worker_id)
        return 0 if record is None else record.tasks

    def family_ranked(self, family: Any) -> RankedSet | None:
        return self.families.get(family)

    def excluded(self, worker_id: str) -> Excluded:
        """The upstream-disabled share of ``worker_id``'s counted tasks."""
        if not self.disabled:
            return NONE_EXCLUDED
        if self._excluded is None:
            self._excluded = self._find_excluded()
        return self._excluded.get(worker_id, NONE_EXCLUDED)

    def _find_excluded(self) -> dict[str, Excluded]:
        found = self._excluded_tasks = set()
        stack = list(self.disabled)
        while stack:
            for task in self.dependants_of(stack.pop()):
                if task._st == PENDING and task not in found:
                    found.add(task)
                    stack.append(task.id)
        shares: dict[str, list[int]] = {}
        for task in found:
            members = task._wk
            unique = len(members) == 1
            for worker_id in members:
                share = shares.setdefault(worker_id, [0, 0, 0])
                share[0] += 1
                share[1] += unique
            if members:
                shares.setdefault(members.peek(last=True), [0, 0, 0])[2] += 1
        return {worker_id: Excluded(*share) for worker_id, share in shares.items()}

    def _recheck_excluded(self, task: Any, old: Any, new: Any) -> None:
        """Forget the excluded tasks if ``task`` going from status ``old`` to ``new`` can change
        them: a DISABLED task comes or goes, an excluded task leaves PENDING, or a task enters
        PENDING with a dependency that is DISABLED or excluded (every other change leaves them)."""
        if self._excluded is None:
            return
        if (DISABLED in (old, new) or (old == PENDING and task in self._excluded_tasks)
                or (new == PENDING and any(dep in self.disabled or self.tasks.get(dep) in self._excluded_tasks
                                           for dep in task._dp))):
            self._excluded = None

    def _shares_changed(self, task: Any) -> None:
        if self._excluded is not None and task in self._excluded_tasks:
            self._excluded = None

    # -- the state's tasks come and go --------------------------------------------------------

    def rebuild(self, tasks: dict[str, Any]) -> None:
        """Index every task of a state just installed, in the state's order."""
        self._reset(tasks)
        for task in tasks.values():
            adopt(task)
            task._ix = self
            task._sq = next(self._entries)
            self._join(task)
            self._link_all(task)
        for task in tasks.values():
            task._nm = self._missing(task._dp)
            self._count(task, 1)
            if task._st == DISABLED:
                self.disabled[task.id] = task
            self._refresh(task)

    def inserted(self, task: Any) -> None:
        """``task`` just joined the state."""
        adopt(task)
        task._ix = self
        task._sq = next(self._entries)
        self._join(task)
        self._link_all(task)
        task._nm = self._missing(task._dp)
        self._count(task, 1)
        if task._st == DONE:
            self._dependants_shift(task.id, -1)
        elif task._st == DISABLED:
            self.disabled[task.id] = task
        self._refresh(task)
        self._recheck_excluded(task, None, task._st)

    def removed(self, task: Any) -> None:
        """``task`` just left the state (pruned)."""
        self._leave(task)
        self._count(task, -1)
        self._forget_idle(task._wk)
        for dep in task._dp:
            self._unlink(dep, task)
        if task._st == DONE:
            self._dependants_shift(task.id, 1)
        self.disabled.pop(task.id, None)
        self.unclaimed.discard(task)
        for worker_id in itertools.chain(task._wk, task.stakeholders):
            named = self.worker_tasks.get(worker_id)
            if named is not None:
                named.discard(task)
        task._ix = None
        self._recheck_excluded(task, task._st, None)

    # -- a task changes ----------------------------------------------------------------------

    def set_status(self, task: Any, status: Any) -> None:
        old = task._st
        if status == old:
            task._st = status
            return
        recount = (old in COUNTED) != (status in COUNTED) or (old == PENDING) != (status == PENDING)
        if recount:
            self._count(task, -1)
        task._st = status
        if recount:
            self._count(task, 1)
        task._sq = next(self._entries)
        if old == RUNNING:
            self.unclaimed.add(task)
        if old == DISABLED:
            self.disabled.pop(task.id, None)
        elif status == DISABLED:
            self.disabled[task.id] = task
        if old == DONE:
            self._dependants_shift(task.id, 1)
        elif status == DONE:
            self._dependants_shift(task.id, -1)
        if task._rk is not None:
            self._leave(task)
        self._refresh(task)
        self._recheck_excluded(task, old, status)

    def set_priority(self, task: Any, priority: Any) -> None:
        if task._rk is None or priority == task._pr:
            task._pr = priority
            return
        self._leave(task)
        task._pr = priority
        self._refresh(task)

    def set_resources(self, task: Any, resources: Any) -> None:
        recount = task._st == PENDING and bool(resources) != bool(task._rs)
        if recount:
            self._count(task, -1)
        task._rs = resources
        if recount:
            self._count(task, 1)

    def set_family(self, task: Any, family: Any) -> None:
        if task._rk is None or family == task._fm:
            task._fm = family
            return
        self._leave(task)
        task._fm = family
        self._refresh(task)

    def set_deps(self, task: Any, deps: Any) -> None:
        if deps == task._dp:  # add_task sets a task's deps on every call, mostly unchanged
            task._dp = deps
            return
        for dep in task._dp:
            self._unlink(dep, task)
        task._dp = deps
        self._link_all(task)
        self._deps_changed(task)

    def deps_grown(self, task: Any) -> None:
        """``task.deps`` gained members in place (add_task's new_deps)."""
        for dep in task._dp:
            self._link(dep, task)
        self._deps_changed(task)

    def set_workers(self, task: Any, workers: WorkerSet) -> None:
        self.workers_changing(task)
        task._wk = workers
        self.workers_changed(task)

    def remove_set(self, task: Any, when: Any) -> None:
        if when:
            heapq.heappush(self.removals, (when, next(self._entries), task))
        elif when is None:
            self.unclaimed.add(task)

    def stakeholder_added(self, task: Any, worker_id: str) -> None:
        self._worker_tasks(worker_id).add(task)
        # Claimed now, while the task is at hand: a bulk add leaves prune nothing to look at.
        self.unclaimed.discard(task)

    def stakeholders_lost(self, task: Any) -> None:
        if not task.stakeholders:
            self.unclaimed.add(task)

    def tasks_naming(self, worker_ids: Iterable[str]) -> list[Any]:
        """The tasks that may name one of ``worker_ids`` among workers or stakeholders."""
        found: set[Any] = set()
        for worker_id in worker_ids:
            found.update(self.worker_tasks.get(worker_id, ()))
        return list(found)

    def workers_forgotten(self, worker_ids: Iterable[str], stakeholders_too: bool) -> None:
        for worker_id in worker_ids:
            named = self.worker_tasks.pop(worker_id, None)
            if named and not stakeholders_too:
                kept = {task for task in named if worker_id in task.stakeholders}
                if kept:
                    self.worker_tasks[worker_id] = kept

    def prune_candidates(self, now: float, status_tasks: Callable[[str], dict[str, Any]]) -> list[Any]:
        """The tasks luigi's prune may change at ``now``, in the state's order."""
        # A task with stakeholders gives luigi's steps nothing to do unless its status or its
        # remove time says so, and those are gathered below.
        found = {task for task in self.unclaimed if not task.stakeholders}
        self.unclaimed = set()
        removals = self.removals
        while removals and removals[0][0] <= now:
            when, _, task = heapq.heappop(removals)
            if task._rm == when:
                found.add(task)
        for status in (RUNNING, BATCH_RUNNING, DISABLED, FAILED):
            found.update(status_tasks(status).values())
        return sorted((task for task in found if task._ix is self), key=_joined_at)

    def worker_added(self, task: Any, worker_id: str) -> None:
        self._worker_tasks(worker_id).add(task)
        self._count(task, -1)
        task._wk.insert(worker_id)
        self._count(task, 1)
        if task._rk is not None:
            self._record(worker_id).ranked.add(task._rk)
        self._shares_changed(task)

    def workers_changing(self, task: Any) -> None:
        self._before = list(task._wk)
        self._count(task, -1)
        if task._rk is not None:
            for worker_id in task._wk:
                self.workers[worker_id].ranked.remove(task._rk)

    def workers_changed(self, task: Any) -> None:
        self._count(task, 1)
        if task._rk is not None:
            for worker_id in task._wk:
                self._record(worker_id).ranked.add(task._rk)
        self._forget_idle(self._before)
        self._shares_changed(task)

    # -- internals ---------------------------------------------------------------------------

    def _record(self, worker_id: str) -> WorkerRecord:
        record = self.workers.get(worker_id)
        if record is None:
            record = self.workers[worker_id] = WorkerRecord()
        return record

    def _join(self, task: Any) -> None:
        task._in = next(self._joined)
        self.unclaimed.add(task)
        if task._rm:
            heapq.heappush(self.removals, (task._rm, next(self._entries), task))
        for worker_id in itertools.chain(task._wk, task.stakeholders):
            self._worker_tasks(worker_id).add(task)

    def _worker_tasks(self, worker_id: str) -> set[Any]:
        named = self.worker_tasks.get(worker_id)
        if named is None:
            named = self.worker_tasks[worker_id] = set()
        return named

    def _forget_idle(self, worker_ids: Iterable[str]) -> None:
        for worker_id in worker_ids:
            record = self.workers.get(worker_id)
            if record is not None and record.tasks == 0:
                del self.workers[worker_id]

    def _count(self, task: Any, sign: int) -> None:
        members = task._wk._members
        if not members:
            return
        status = task._st
        counted = status in COUNTED
        pending = status == PENDING
        resourced = pending and bool(task._rs)
        unique = len(members) == 1
        for worker_id in members:
            record = self.workers.get(worker_id)
            if record is None:
                record = self.workers[worker_id] = WorkerRecord()
            record.tasks += sign
            if counted:
                record.counted += sign
                if unique:
                    record.unique += sign
            if pending:
                record.pending += sign
                if unique:
                    record.pending_unique += sign
            if resourced:
                record.with_resources += sign
        if counted:
            self.workers[next(reversed(members))].last += sign

    def _missing(self, deps: Iterable[str]) -> int:
        tasks = self.tasks
        return sum(1 for dep in deps if (found := tasks.get(dep)) is None or found._st != DONE)

    def dependants_of(self, task_id: str) -> Iterable[Any]:
        linked = self.dependants.get(task_id)
        if linked is None:
            return ()
        return linked if type(linked) is set else (linked,)

    def _link_all(self, task: Any) -> None:
        for dep in task._dp:
            self._link(dep, task)

    def _link(self, dep: str, task: Any) -> None:
        dependants = self.dependants
        linked = dependants.get(dep)
        if linked is None:
            dependants[dep] = task
        elif type(linked) is set:
            linked.add(task)
        elif linked is not task:
            dependants[dep] = {linked, task}

    def _unlink(self, dep: str, task: Any) -> None:
        dependants = self.dependants
        linked = dependants.get(dep)
        if linked is task:
            del dependants[dep]
        elif type(linked) is set:
            linked.discard(task)
            if len(linked) == 1:
                dependants[dep] = next(iter(linked))

    def _deps_changed(self, task: Any) -> None:
        task._nm = self._missing(task._dp)
        if task._rk is not None and task._nm:
            self._leave(task)
        self._refresh(task)
        self._excluded = None

    def _dependants_shift(self, task_id: str, delta: int) -> None:
        for dependant in self.dependants_of(task_id):
            dependant._nm += delta
            if dependant._rk is not None:
                self._leave(dependant)
            self._refresh(dependant)

    def _refresh(self, task: Any) -> None:
        """Put ``task`` in the ranked indexes if it is schedulable and not there yet."""
        if task._rk is None and task._st == PENDING and task._nm == 0:
            key = task._rk = (_rank(task._pr), task.time, 0, task._sq, task)
            self.ranked.add(key)
            family = self.families.get(task._fm)
            if family is None:
                family = self.families[task._fm] = RankedSet()
            family.add(key)
            for worker_id in task._wk._members:
                self._record(worker_id).ranked.add(key)

    def _leave(self, task: Any) -> None:
        key = task._rk
        if key is None:
            return
        task._rk = None
        self.ranked.remove(key)
        family = self.families[task._fm]
        family.remove(key)
        if not family:
            del self.families[task._fm]
        for worker_id in task._wk._members:
            self.workers[worker_id].ranked.remove(key)


def _rank(priority: Any) -> Any:
    # luigi's _update_priority counts a priority that is not a number as 0 (its sort would fail
    # on it); here it must not fail on the way in either.
    return -priority if isinstance(priority, (int, float)) else 0


def _joined_at(task: Any) -> int:
    return task._in


__all__ = ["IndexedTask", "SchedulingIndex", "WorkerRecord"]
