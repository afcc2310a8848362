"""luigi's Scheduler from the inside: its task records, its state tuple, its scheduling hooks, and
the parts of it the indexed core (luigi_appliance/scheduler/) replaces or listens to: a task state
telling an observer of tasks joining and leaving, add_task without throwaway Tasks, prune over
candidates."""

from __future__ import annotations

import collections
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import luigi.scheduler
from luigi.task_status import BATCH_RUNNING, DISABLED, DONE, FAILED, PENDING, RUNNING, SUSPENDED, UNKNOWN

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("luigi.scheduler")  # luigi's own logger: its "Removing task" lines stay where they were


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


def prometheus_registry(scheduler: luigi.scheduler.Scheduler) -> CollectorRegistry | None:
    """The registry of luigi's own Prometheus collector (``[scheduler] metrics_collector =
    prometheus``: tasks started, done, failed and disabled by family), to serve on /metrics with
    the appliance's; None with any other collector."""
    # Imported here: the module also declares luigi's [prometheus] Config, a task class that
    # every luigi task registry listing would show otherwise.
    from luigi.contrib.prometheus_metric import PrometheusMetricsCollector

    collector = scheduler._state._metrics_collector
    if not isinstance(collector, PrometheusMetricsCollector):
        return None
    return collector.registry


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


class StateObserver(Protocol):
    """What an IndexedTaskState tells of its tasks (luigi_appliance.scheduler.index)."""

    def inserted(self, task: Any) -> None: ...

    def removed(self, task: Any) -> None: ...

    def rebuild(self, tasks: dict[str, Any]) -> None: ...

    def tasks_naming(self, worker_ids: Any) -> list[Any]: ...

    def stakeholders_lost(self, task: Any) -> None: ...

    def workers_forgotten(self, worker_ids: Any, stakeholders_too: bool) -> None: ...


class IndexedTaskState(luigi.scheduler.SimpleTaskState):
    """luigi's task state telling ``observer`` of every task that joins or leaves it, and of a
    whole state installed (set_state: load() and install_state)."""

    def __init__(self, state_path: str, observer: StateObserver):
        super().__init__(state_path)
        self.observer = observer
        observer.rebuild(self._tasks)

    def get_task(self, task_id: str, default: Any = None, setdefault: Any = None) -> Any:
        if not setdefault:
            return self._tasks.get(task_id, default)  # luigi's own get_task, one call less
        if task_id in self._tasks:
            return super().get_task(task_id, setdefault=setdefault)
        task = super().get_task(task_id, setdefault=setdefault)
        self.observer.inserted(task)
        return task

    def get_worker(self, worker_id: str) -> Any:
        # luigi's setdefault(worker_id, Worker(worker_id)) builds a Worker on every call, several
        # per RPC, to throw it away.
        worker = self._active_workers.get(worker_id)
        if worker is None:
            worker = self._active_workers[worker_id] = luigi.scheduler.Worker(worker_id)
        return worker

    def inactivate_tasks(self, delete_tasks: Any) -> None:
        delete_tasks = list(delete_tasks)
        leaving = [self._tasks[task_id] for task_id in delete_tasks]
        super().inactivate_tasks(delete_tasks)
        for task in leaving:
            self.observer.removed(task)

    def set_state(self, state: Any) -> None:
        super().set_state(state)
        self.observer.rebuild(self._tasks)

    def _remove_workers_from_tasks(self, workers: Any, remove_stakeholders: bool = True) -> None:
        # luigi's loop, over the tasks that can name these workers instead of every task.
        for task in self.observer.tasks_naming(workers):
            if remove_stakeholders:
                task.stakeholders.difference_update(workers)
                self.observer.stakeholders_lost(task)
            task.workers -= workers
        self.observer.workers_forgotten(workers, remove_stakeholders)

    def status_tasks(self, status: str) -> dict[str, Any]:
        """The tasks in ``status`` by id, in the order they entered it."""
        return self._status_tasks[status]

    def known_worker(self, worker_id: str) -> Any | None:
        """The Worker record of ``worker_id`` if luigi has one (get_worker would make one)."""
        return self._active_workers.get(worker_id)


class LuigiScheduler(luigi.scheduler.Scheduler):
    """luigi's Scheduler with public hooks for the appliance's scheduler (luigi_appliance.scheduler)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._retry_policies: dict[Any, Any] = {}
        self._history_muted = False
        # What the resources were before any update_resource(s): an empty state's (ha/state_payload.py).
        self.configured_resources = dict(self._resources) if self._resources is not None else None

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Tell nobody outside of the state what the body changes: no task history, no e-mails
        (luigi's disable notice, the batched failure mails). A standby applying the leader's
        calls (ha/replay.py): the leader told them already."""
        muted_history, self._history_muted = self._history_muted, True
        notifications = luigi.scheduler.notifications
        luigi.scheduler.notifications = _NO_NOTIFICATIONS  # type: ignore[assignment]
        batcher = getattr(self, "_email_batcher", None)
        if batcher is not None:
            self._email_batcher = _NoEmails()
        try:
            yield
        finally:
            self._history_muted = muted_history
            luigi.scheduler.notifications = notifications
            if batcher is not None:
                self._email_batcher = batcher

    def may_schedule(self, task: Any) -> bool:
        """Whether get_work may hand out ``task`` to the caller (luigi's own checks passed)."""
        return True

    def is_ready(self, task: Any) -> bool:
        """luigi's own check that ``task`` may run now: PENDING, every dependency DONE."""
        return super()._schedulable(task)

    def _schedulable(self, task: Any) -> bool:
        # get_work asks this of every candidate before taking it, for its own worker or, as an
        # assistant, for any runnable task.
        return self.is_ready(task) and self.may_schedule(task)

    def add_task(self, task_id: Any = None, status: Any = PENDING, runnable: Any = True, deps: Any = None,
                 new_deps: Any = None, expl: Any = None, resources: Any = None, priority: Any = 0, family: Any = "",
                 module: Any = None, params: Any = None, param_visibilities: Any = None,
                 accepts_messages: Any = False, assistant: Any = False, tracking_url: Any = None,
                 worker: Any = None, batchable: Any = None, batch_id: Any = None, retry_policy_dict: Any = None,
                 owners: Any = None, **kwargs: Any) -> Any:
        """luigi 3.8.1's add_task, statement for statement, except that it builds a Task for the
        task and for each dependency only when the state lacks it (luigi builds both on every
        call and throws them away, the larger part of an add_task's cost), shares RetryPolicy
        objects, tells the hooks deps_grown and stakeholder_added (the index's), and makes the
        placeholders of new dependencies in id order."""
        assert worker is not None
        worker_id = worker
        worker = self._update_worker(worker_id)

        resources = {} if resources is None else resources.copy()

        if retry_policy_dict is None:
            retry_policy_dict = {}

        retry_policy = self._shared_retry_policy(retry_policy_dict)

        state = self._state
        task = state.get_task(task_id)
        if task is None and worker.enabled:
            task = state.get_task(task_id, setdefault=self._make_task(
                task_id=task_id, status=PENDING, deps=deps, resources=resources, priority=priority, family=family,
                module=module, params=params, param_visibilities=param_visibilities))

        if task is None or (task.status != RUNNING and not worker.enabled):
            return

        # Ignore claims that the task is PENDING if it very recently was marked as DONE.
        if (status == PENDING and task.status == DONE
                and (time.time() - task.updated) < self._config.stable_done_cooldown_secs):
            return

        # for setting priority, we'll sometimes create tasks with unset family and params
        if not task.family:
            task.family = family
        if not getattr(task, "module", None):
            task.module = module
        if not getattr(task, "param_visibilities", None):
            task.param_visibilities = {} if param_visibilities is None else param_visibilities
        if not task.params:
            task.set_params(params)

        if batch_id is not None:
            task.batch_id = batch_id
        if status == RUNNING and not task.worker_running:
            task.worker_running = worker_id
            if batch_id:
                # copy resources_running of the first batch task
                batch_tasks = state.get_batch_running_tasks(batch_id)
                task.resources_running = batch_tasks[0].resources_running.copy()
            task.time_running = time.time()

        if accepts_messages is not None:
            task.accepts_messages = accepts_messages

        if tracking_url is not None or task.status != RUNNING:
            task.tracking_url = tracking_url
            if task.batch_id is not None:
                for batch_task in state.get_batch_running_tasks(task.batch_id):
                    batch_task.tracking_url = tracking_url

        if batchable is not None:
            task.batchable = batchable

        if task.remove is not None:
            task.remove = None  # unmark task for removal so it isn't removed after being added

        if expl is not None:
            task.expl = expl
            if task.batch_id is not None:
                for batch_task in state.get_batch_running_tasks(task.batch_id):
                    batch_task.expl = expl

        task_is_not_running = task.status not in (RUNNING, BATCH_RUNNING)
        task_started_a_run = status in (DONE, FAILED, RUNNING)
        running_on_this_worker = task.worker_running == worker_id
        if task_is_not_running or (task_started_a_run and running_on_this_worker) or new_deps:
            # don't allow re-scheduling of task while it is running, it must either fail or succeed on
            # the worker actually running it
            if status != task.status or status == PENDING:
                self._update_task_history(task, status)
            state.set_status(task, PENDING if status == SUSPENDED else status, self._config)

        if status == FAILED and self._config.batch_emails:
            batched_params, _ = state.get_batcher(worker_id, family)
            if batched_params:
                unbatched_params = {param: value for param, value in task.params.items() if param not in batched_params}
            else:
                unbatched_params = task.params
            try:
                expl_raw = json.loads(expl)
            except ValueError:
                expl_raw = expl

            self._email_batcher.add_failure(task.pretty_id, task.family, unbatched_params, expl_raw, owners)
            if task.status == DISABLED:
                self._email_batcher.add_disable(task.pretty_id, task.family, unbatched_params, owners)

        if deps is not None:
            task.deps = set(deps)

        if new_deps is not None:
            task.deps.update(new_deps)
            self.deps_grown(task)

        if resources is not None:
            task.resources = resources

        if worker.enabled and not assistant:
            task.stakeholders.add(worker_id)
            self.stakeholder_added(task, worker_id)

            # Task dependencies might not exist yet. Let's create dummy tasks for them for now.
            # Otherwise the task dependencies might end up being pruned if scheduling takes a long time
            # (luigi walks the set as it iterates, which differs between processes: in id order here,
            # so that an [ha] standby makes the placeholders in the leader's order, ha/replay.py)
            for dep in sorted(task.deps, key=str) if task.deps else ():
                t = state.get_task(dep)
                if t is None:
                    placeholder = self._make_task(task_id=dep, status=UNKNOWN, deps=None, priority=priority)
                    t = state.get_task(dep, setdefault=placeholder)
                t.stakeholders.add(worker_id)
                self.stakeholder_added(t, worker_id)

        self._update_priority(task, priority, worker_id)

        # Because some tasks (non-dynamic dependencies) are `_make_task`ed
        # before we know their retry_policy, we always set it here
        task.retry_policy = retry_policy

        if runnable and status != FAILED and worker.enabled:
            task.workers.add(worker_id)
            worker.tasks.add(task)  # luigi: state.get_worker(worker_id), the same record
            task.runnable = runnable

    def worker_list(self, include_running: Any = True, **kwargs: Any) -> Any:
        # luigi's worker_list, statement for statement, with its walk over every PENDING task
        # behind pending_per_worker().
        self.prune()
        workers = [
            dict(
                name=worker.id,
                last_active=worker.last_active,
                started=worker.started,
                state=worker.state,
                first_task_display_name=self._first_task_display_name(worker),
                num_unread_rpc_messages=len(worker.rpc_messages),
                **worker.info,
            )
            for worker in self._state.get_active_workers()
        ]
        workers.sort(key=lambda worker: worker["started"], reverse=True)
        if include_running:
            running: dict[str, dict[str, Any]] = collections.defaultdict(dict)
            for task in self._state.get_active_tasks_by_status(RUNNING):
                if task.worker_running:
                    running[task.worker_running][task.id] = self._serialize_task(task.id, include_deps=False)
            pending = self.pending_per_worker([worker["name"] for worker in workers])
            for worker in workers:
                tasks = running[worker["name"]]
                num_pending, num_uniques = pending[worker["name"]]
                worker["num_running"] = len(tasks)
                worker["num_pending"] = num_pending
                worker["num_uniques"] = num_uniques
                worker["running"] = tasks
        return workers

    def pending_per_worker(self, worker_ids: list[str]) -> dict[str, tuple[int, int]]:
        """Per worker id: how many PENDING tasks name it among their workers, and how many name it alone."""
        num_pending: dict[str, int] = collections.defaultdict(int)
        num_uniques: dict[str, int] = collections.defaultdict(int)
        for task in self._state.get_active_tasks_by_status(PENDING):
            for worker in task.workers:
                num_pending[worker] += 1
            if len(task.workers) == 1:
                num_uniques[next(iter(task.workers))] += 1
        return {worker_id: (num_pending[worker_id], num_uniques[worker_id]) for worker_id in worker_ids}

    def inverse_dep_graph(self, task_id: Any, include_done: Any = True, **kwargs: Any) -> Any:
        # luigi's inverse_dep_graph, with its map of every task's dependants behind dependants().
        self.prune()
        if not self._state.has_task(task_id):
            return {}
        dependants = self.dependants()
        return self._traverse_graph(task_id, dep_func=lambda t: dependants(t.id), include_done=include_done)

    def dependants(self) -> Callable[[str], set[str]]:
        """A lookup: task id -> the ids of the tasks whose dependencies include it."""
        inverse_graph: dict[str, set[str]] = collections.defaultdict(set)
        for task in self._state.get_active_tasks():
            for dep in task.deps:
                inverse_graph[dep].add(task.id)
        return inverse_graph.__getitem__

    def _shared_retry_policy(self, retry_policy_dict: dict[str, Any]) -> Any:
        # One RetryPolicy object per distinct policy, shared by the tasks that have it (luigi
        # stores a fresh one in every task on every add_task).
        config = self._config
        if retry_policy_dict:
            policy = self._generate_retry_policy(retry_policy_dict)
        else:
            policy = config._get_retry_policy()
        return self._retry_policies.setdefault(policy, policy)

    def deps_grown(self, task: Any) -> None:
        """``task.deps`` just gained members in place (add_task's new_deps)."""

    def stakeholder_added(self, task: Any, worker_id: str) -> None:
        """``worker_id`` just joined ``task.stakeholders``."""

    def may_remove(self, task: Any) -> bool:
        """Whether prune may drop ``task`` once luigi would (no worker wants it any more)."""
        return True

    def prune_candidates(self) -> list[Any]:
        """The tasks prune may change, in the state's order (luigi: every task)."""
        return list(self._state.get_active_tasks())

    def _prune_tasks(self) -> None:
        # luigi's _prune_tasks over prune_candidates() instead of every task.
        assistant_ids = {w.id for w in self._state.get_assistants()}
        remove_tasks = []
        for task in self.prune_candidates():
            self._state.fail_dead_worker_task(task, self._config, assistant_ids)
            self._state.update_status(task, self._config)
            if self._state.may_prune(task) and self.may_remove(task):
                log.info("Removing task %r", task.id)
                remove_tasks.append(task.id)
        self._state.inactivate_tasks(remove_tasks)

    def install_task_state(self, make_task: Any, observer: StateObserver) -> IndexedTaskState:
        """Make tasks with ``make_task`` (luigi's Task signature) and keep them in an
        IndexedTaskState telling ``observer``; to be called from __init__, before any task."""
        self._make_task = functools.partial(make_task, retry_policy=self._config._get_retry_policy())
        state = IndexedTaskState(self._config.state_path, observer)
        state._metrics_collector = self._state._metrics_collector
        self._state = state
        return state

    @property
    def task_state(self) -> Any:
        """luigi's SimpleTaskState of this scheduler."""
        return self._state

    @property
    def settings(self) -> Any:
        """luigi's [scheduler] config object of this scheduler."""
        return self._config

    @property
    def paused(self) -> bool:
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self._paused = value

    @property
    def resource_capacities(self) -> dict[str, Any] | None:
        """The resources' capacities (update_resource(s) change them), as luigi keeps them."""
        return self._resources

    @resource_capacities.setter
    def resource_capacities(self, value: dict[str, Any] | None) -> None:
        self._resources = value

    def update_worker(self, worker_id: str, worker_reference: Any = None, get_work: bool = False) -> Any:
        """luigi's record of ``worker_id``, marked active now (made if new)."""
        return self._update_worker(worker_id, worker_reference, get_work=get_work)

    def reset_orphaned_batch_running_tasks(self, worker_id: str) -> None:
        self._reset_orphaned_batch_running_tasks(worker_id)

    def used_resources(self) -> Any:
        """The resources RUNNING tasks hold (a defaultdict(int))."""
        return self._used_resources()

    def has_resources(self, needed: Any, used: Any) -> bool:
        return self._has_resources(needed, used)

    def record_history(self, task: Any, status: str, host: Any = None) -> None:
        """Report ``task``'s new ``status`` to the task history, as luigi's RPCs do."""
        self._update_task_history(task, status, host=host)

    def task_records(self) -> dict[str, Any]:
        """luigi's dict of this scheduler's task records by id (read only)."""
        return self._state._tasks

    def task_record(self, task_id: str) -> Any | None:
        """This scheduler's record of ``task_id``, or None."""
        return task_record(self, task_id)

    def _update_task_history(self, task: Any, status: str, host: Any = None) -> None:
        # luigi reports every status change of a task here (add_task, get_work, forgive, mark done).
        if not self._history_muted:
            super()._update_task_history(task, status, host=host)
        self.status_reported(task, status)

    def status_reported(self, task: Any, status: str) -> None:
        """``task`` just changed to ``status`` by one of luigi's RPCs (as its task history hears it)."""

    def record_status(self, task: Any, status: str) -> None:
        """Set ``task``'s status as luigi's own RPCs do: also reported to the task history."""
        self._state.set_status(task, status, self._config)
        self.record_history(task, status)


class _NoEmails:
    """luigi's BatchNotifier while replaying: collects and sends nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class _NoNotifications:
    """luigi.notifications while replaying: sends nothing."""

    def send_error_email(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_NOTIFICATIONS = _NoNotifications()
