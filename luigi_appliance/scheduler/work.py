"""get_work, count_pending, is_trivial_worker, worker_list's pending counts and inverse_dep_graph's
dependants answered from the indexes (index.py), exactly as luigi 3.8.1 answers them.

luigi's get_work sorts every PENDING and RUNNING task and walks them all. In that walk only some
tasks can matter: a RUNNING task (it holds a greedy worker and resources), a schedulable task of
the caller (it may become the answer) and a schedulable task of a worker with greedy capacity
left (it reserves that capacity). Every other task is a no-op in luigi's loop. So the walk here
merges, in luigi's order, the RUNNING tasks with the ranked index of the caller and those of the
workers that still have capacity, dropping a worker's index once its capacity is used up, and
stops when the caller's own index is exhausted (nothing later can become the answer) or an answer
is found. The batch then only gathers schedulable tasks of the answer's family: the walk goes on
in that family's index from the answer. An assistant may take any runnable task, so its walk is
the global index. Each task met is judged by luigi's own conditions, in luigi's order.

prune visits only the tasks it may change (index.py, ``prune_candidates``), and add_task builds
no throwaway Task (luigi_internals/scheduler.py).

A worker whose ``tasks`` set holds tasks the state no longer has (pruned while still named there,
which only an assistant's add_task can cause) makes luigi's answers depend on which of its two
iteration paths it takes; for such a worker the stock code answers.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from luigi.task_status import RUNNING

from luigi_appliance.luigi_internals.scheduler import LuigiScheduler
from luigi_appliance.scheduler.index import SchedulingIndex
from luigi_appliance.scheduler.ranked import RankedSet
from luigi_appliance.scheduler.tasks import IndexedTask


@dataclass
class Walk:
    """luigi's get_work loop variables."""

    worker_id: str
    assistant: bool
    trivial: bool
    used_resources: Any
    greedy_workers: dict[str, int]
    greedy_resources: Any = field(default_factory=lambda: collections.defaultdict(int))
    best_task: Any = None
    batched_params: Any = None
    unbatched_params: Any = None
    batched_tasks: list[Any] = field(default_factory=list)
    max_batch_size: Any = 1


def _running_key(task: Any) -> tuple[Any, ...]:
    priority = task.priority
    return (-priority if isinstance(priority, (int, float)) else 0, task.time, 1, task._sq, task)


class IndexedScheduler(LuigiScheduler):
    """luigi's Scheduler whose hot RPCs read incrementally kept indexes instead of scanning."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.index = SchedulingIndex()
        self.install_task_state(IndexedTask, self.index)

    # -- luigi's per-task check, O(1) ---------------------------------------------------------

    def is_ready(self, task: Any) -> bool:
        if getattr(task, "_ix", None) is not self.index:
            return super().is_ready(task)
        return task._rk is not None

    def deps_grown(self, task: Any) -> None:
        if task._ix is self.index:
            self.index.deps_grown(task)

    def stakeholder_added(self, task: Any, worker_id: str) -> None:
        if task._ix is self.index:
            self.index.stakeholder_added(task, worker_id)

    def prune_candidates(self) -> list[Any]:
        return self.index.prune_candidates(time.time(), self.task_state.status_tasks)

    # -- which path luigi would take ----------------------------------------------------------

    def _exact_for(self, worker_id: str) -> bool:
        """Whether ``worker_id``'s tasks set holds exactly the state's tasks naming it (then
        luigi's two iteration paths agree and the indexes answer)."""
        worker = self.task_state.known_worker(worker_id)
        return worker is None or len(worker.tasks) == self.index.tasks_of(worker_id)

    def _is_trivial(self, worker: Any) -> bool:
        if worker.assistant:
            return False
        record = self.index.record(worker.id)
        return record is None or record.with_resources == 0

    # -- count_pending ------------------------------------------------------------------------

    def count_pending(self, worker: str) -> Any:
        if not self._exact_for(worker):
            return super().count_pending(worker)
        worker_id, state = worker, self.task_state
        record = state.get_worker(worker_id)
        running_tasks = []
        for task in list(state.status_tasks(RUNNING).values()):
            if worker_id in task.workers:
                other_worker = state.get_worker(task.worker_running)
                if other_worker is not None:
                    more_info = {"task_id": task.id, "worker": str(other_worker)}
                    more_info.update(other_worker.info)
                    running_tasks.append(more_info)
        counts = self.index.record(worker_id)
        excluded = self.index.excluded(worker_id)
        return {
            "n_pending_tasks": (counts.counted if counts else 0) - excluded.counted,
            "n_unique_pending": (counts.unique if counts else 0) - excluded.unique,
            "n_pending_last_scheduled": (counts.last if counts else 0) - excluded.last,
            "worker_state": record.state,
            "running_tasks": running_tasks,
        }

    # -- worker_list, inverse_dep_graph --------------------------------------------------------

    def pending_per_worker(self, worker_ids: list[str]) -> dict[str, tuple[int, int]]:
        records = self.index.workers
        counts = {}
        for worker_id in worker_ids:
            record = records.get(worker_id)
            counts[worker_id] = (0, 0) if record is None else (record.pending, record.pending_unique)
        return counts

    def dependants(self) -> Callable[[str], set[str]]:
        index = self.index
        return lambda task_id: {task.id for task in index.dependants_of(task_id)}

    # -- get_work -----------------------------------------------------------------------------

    def get_work(self, host: Any = None, assistant: bool = False, current_tasks: Any = None,
                 worker: str | None = None, **kwargs: Any) -> Any:
        assert worker is not None
        config, state = self.settings, self.task_state
        if self._exact_for(worker) and config.prune_on_get_work:
            self.prune()
        if not self._exact_for(worker):
            # (luigi prunes again here if prune_on_get_work: a second prune at once changes nothing)
            return super().get_work(host=host, assistant=assistant, current_tasks=current_tasks,
                                    worker=worker, **kwargs)
        worker_id = worker
        record = self.update_worker(worker_id, {"host": host}, get_work=True)
        if not record.enabled:
            return {"n_pending_tasks": 0, "running_tasks": [], "task_id": None, "n_unique_pending": 0,
                    "worker_state": record.state}
        if assistant:
            self.add_worker(worker_id, [("assistant", assistant)])

        best_task = None
        if current_tasks is not None:
            claimed = set(current_tasks)
            best_rank = None
            for task in state.status_tasks(RUNNING).values():
                # luigi takes the last of a stable ascending sort by rank: the highest rank, and
                # of equal ranks the one that entered RUNNING last.
                if task.worker_running == worker_id and task.id not in claimed:
                    rank = (task.priority, -task.time)
                    if best_rank is None or rank >= best_rank:
                        best_task, best_rank = task, rank
            self.reset_orphaned_batch_running_tasks(worker_id)

        record = state.get_worker(worker_id)
        walk = None
        if not self.paused:
            if self._is_trivial(record):
                walk = Walk(worker_id, assistant, True, collections.defaultdict(int), {})
            else:
                activity_limit = time.time() - config.worker_disconnect_delay
                active = state.get_active_workers(last_get_work_gt=activity_limit)
                walk = Walk(worker_id, assistant, False, self.used_resources(),
                            {w.id: w.info.get("workers", 1) for w in active})
            if best_task is None:
                self._walk(walk)
                best_task = walk.best_task
                if best_task is not None and walk.batched_params:
                    self._gather_batch(walk)
        batched_tasks = walk.batched_tasks if walk is not None and walk.best_task is not None else []
        return self._answer(worker_id, host, best_task, batched_tasks, walk)

    def _streams(self, walk: Walk) -> Iterator[tuple[Any, ...]]:
        """The keys luigi's loop may act on, in its order, each once (see the module docstring)."""
        index, worker_id = self.index, walk.worker_id
        if walk.assistant:
            sources: list[tuple[str | None, Any]] = [(None, iter(index.ranked))]
        else:
            own = index.record(worker_id)
            if own is None or not own.ranked:
                return
            sources = [(None, iter(own.ranked))]
            for other, capacity in walk.greedy_workers.items():
                theirs = index.record(other)
                if other != worker_id and capacity > 0 and theirs is not None and theirs.ranked:
                    sources.append((other, iter(theirs.ranked)))
        if walk.greedy_workers:
            running = sorted(map(_running_key, self.task_state.status_tasks(RUNNING).values()))
            sources.append((None, iter(running)))
        heap: list[tuple[Any, int, str | None, Any]] = []
        for number, (owner, keys) in enumerate(sources):
            key = next(keys, None)
            if key is not None:
                heap.append((key, number, owner, keys))
        heapq.heapify(heap)
        last = None
        primary = 0  # the caller's own index (or the assistant's global one) is source 0
        while heap:
            key, number, owner, keys = heap[0]
            if key is not last:
                last = key
                yield key
            following = next(keys, None)
            if following is None:
                if number == primary:
                    return
                heapq.heappop(heap)
            elif owner is not None and walk.greedy_workers.get(owner, 0) <= 0:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (following, number, owner, keys))

    def _walk(self, walk: Walk) -> None:
        """luigi's get_work loop until the answer is found, over the tasks that can matter."""
        worker_id, assistant = walk.worker_id, walk.assistant
        greedy_workers, greedy_resources = walk.greedy_workers, walk.greedy_resources
        for key in self._streams(walk):
            task = key[-1]
            if key[2] == 1:  # a RUNNING task
                if task.worker_running in greedy_workers:
                    greedy_workers[task.worker_running] -= 1
                    for resource, amount in (getattr(task, "resources_running", task.resources) or {}).items():
                        greedy_resources[resource] += amount
                continue
            if not (self.may_schedule(task) and self.has_resources(task.resources, greedy_resources)):
                continue
            in_workers = (assistant and task.runnable) or worker_id in task.workers
            if in_workers and self.has_resources(task.resources, walk.used_resources):
                walk.best_task = task
                batch_param_names, walk.max_batch_size = self.task_state.get_batcher(worker_id, task.family)
                if batch_param_names and task.is_batchable():
                    try:
                        walk.batched_params = {name: [task.params[name]] for name in batch_param_names}
                        walk.unbatched_params = {name: value for name, value in task.params.items()
                                                 if name not in walk.batched_params}
                        walk.batched_tasks.append(task)
                    except KeyError:
                        walk.batched_params, walk.unbatched_params = None, None
                return
            workers = itertools.chain(task.workers, [worker_id]) if assistant else task.workers
            for task_worker in workers:
                if greedy_workers.get(task_worker, 0) > 0:
                    greedy_workers[task_worker] -= 1
                    for resource, amount in (task.resources or {}).items():
                        greedy_resources[resource] += amount
                    break

    def _gather_batch(self, walk: Walk) -> None:
        """The rest of luigi's loop once the answer is batchable: same-family schedulable tasks
        after it (of the caller only, on the trivial path: luigi walks only the caller's tasks)."""
        best = walk.best_task
        family: RankedSet | None = self.index.family_ranked(best.family)
        if family is None:
            return
        own_only = walk.trivial
        keys = family.walk_from(best._rk)
        next(keys)  # the answer itself
        batched_params, unbatched_params, batched = walk.batched_params, walk.unbatched_params, walk.batched_tasks
        for key in keys:
            if len(batched) >= walk.max_batch_size:
                return
            task = key[-1]
            if own_only and walk.worker_id not in task.workers:
                continue
            if (task.is_batchable()
                    and all(task.params.get(name) == value for name, value in unbatched_params.items())
                    and task.resources == best.resources
                    and self.may_schedule(task)):
                for name, params in batched_params.items():
                    params.append(task.params.get(name))
                batched.append(task)

    def _answer(self, worker_id: str, host: Any, best_task: Any, batched_tasks: list[Any], walk: Walk | None) -> Any:
        """What luigi's get_work does after its loop."""
        state = self.task_state
        reply = self.count_pending(worker_id)
        if len(batched_tasks) > 1:
            assert walk is not None
            batch_string = "|".join(task.id for task in batched_tasks)
            batch_id = hashlib.new("md5", batch_string.encode("utf-8"), usedforsecurity=False).hexdigest()
            for task in batched_tasks:
                state.set_batch_running(task, batch_id, worker_id)
            combined_params = best_task.params.copy()
            combined_params.update(walk.batched_params)
            reply["task_id"] = None
            reply["task_family"] = best_task.family
            reply["task_module"] = getattr(best_task, "module", None)
            reply["task_params"] = combined_params
            reply["batch_id"] = batch_id
            reply["batch_task_ids"] = [task.id for task in batched_tasks]
        elif best_task:
            self.update_metrics_task_started(best_task)
            state.set_status(best_task, RUNNING, self.settings)
            best_task.worker_running = worker_id
            best_task.resources_running = best_task.resources.copy()
            best_task.time_running = time.time()
            self.record_history(best_task, RUNNING, host=host)
            reply["task_id"] = best_task.id
            reply["task_family"] = best_task.family
            reply["task_module"] = getattr(best_task, "module", None)
            reply["task_params"] = best_task.params
        else:
            reply["task_id"] = None
        return reply

