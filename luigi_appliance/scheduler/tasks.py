"""luigi's scheduler Task, telling its index of every change that moves it in get_work's order.

Why a Task subclass rather than hooks on the scheduler's methods: luigi changes a task's status in
set_status, its priority in _update_priority, its deps, resources, family and workers inside
add_task, its workers again in _remove_workers_from_tasks, and luigi's own tests assign some of
these directly. A property per index-relevant attribute (status, priority, deps, resources,
family, workers) sees every one of those paths, so the index stays exact whatever code mutates
the task. Only ``deps.update(...)`` in place (add_task's new_deps) escapes a property: the
scheduler re-syncs that one after add_task (see work.py).

A task outside any state (luigi builds one per add_task and per dependency before knowing whether
it is needed) has no index and pays only for the property calls. Pickled, a task is luigi's own
Task with luigi's attribute names, so snapshots stay what stock luigi writes and reads; ``adopt``
turns a task unpickled (or made by stock luigi) into this class in place, keeping its identity
(a worker's ``tasks`` set holds the same objects).
"""

from __future__ import annotations

import collections
import copyreg
import sys
import time
from operator import attrgetter
from typing import Any

import luigi.scheduler

from luigi_appliance.scheduler.workerset import WorkerSet

# (luigi's attribute, where this class keeps it): luigi's names are properties here.
RENAMED = (("status", "_st"), ("priority", "_pr"), ("deps", "_dp"), ("resources", "_rs"),
           ("family", "_fm"), ("workers", "_wk"), ("failures", "_fl"), ("remove", "_rm"))
# The index's own per-task fields, never pickled.
INDEX_FIELDS = ("_ix", "_sq", "_nm", "_rk", "_in")


def _interned_keys(params: Any) -> Any:
    # Every task of a family repeats the same parameter names; JSON decoding makes a fresh string
    # for each, so share one.
    if not params:
        return params
    return {sys.intern(k) if type(k) is str else k: v for k, v in params.items()}


class IndexedTask(luigi.scheduler.Task):
    """A scheduler Task whose index (``_ix``, None outside a state) hears of each change.

    The properties read through operator.attrgetter: a C call, as cheap as a plain attribute
    almost, where a Python getter would double the cost of luigi's many reads."""

    _ix: Any = None
    _rk: Any = None

    def __init__(self, task_id: Any, status: Any, deps: Any, resources: Any = None,
                 priority: Any = luigi.scheduler.Task.DEFAULT_PRIORITY, family: Any = "", module: Any = None,
                 params: Any = None, param_visibilities: Any = None, accepts_messages: Any = False,
                 tracking_url: Any = None, status_message: Any = None, progress_percentage: Any = None,
                 retry_policy: Any = "notoptional"):
        # luigi's Task.__init__, field for field and in its order (tests/unit/test_scheduler_index.py
        # compares the two), writing the stored fields directly: no index exists for the task yet,
        # so the properties' notifications would have nothing to tell.
        self.id = task_id
        self.stakeholders: set[str] = set()
        self._wk = WorkerSet(task=self)
        self._dp = set() if deps is None else set(deps)
        self._st = status
        self.time = time.time()
        self.updated = self.time
        self.retry = None
        self._rm = None
        self.worker_running = None
        self.time_running = None
        self.expl = None
        self._pr = priority
        self._rs = {} if resources is None else resources
        self._fm = sys.intern(family) if type(family) is str else family
        self.module = module
        self.param_visibilities = {} if param_visibilities is None else param_visibilities
        self.params: dict[str, Any] = {}
        self.public_params: dict[str, Any] = {}
        self.hidden_params: dict[str, Any] = {}
        self.set_params(params)
        self.accepts_messages = accepts_messages
        self.retry_policy = retry_policy
        self._fl: collections.deque[float] | None = None  # luigi's failures deque (600 bytes empty), made on first use
        self.first_failure_time = None
        self.tracking_url = tracking_url
        self.status_message = status_message
        self.progress_percentage = progress_percentage
        self.scheduler_message_responses: dict[str, Any] = {}
        self.scheduler_disable_time = None
        self.runnable = False
        self.batchable = False
        self.batch_id = None
        self._sq = 0
        self._nm = 0
        self._in = 0

    @property
    def failures(self) -> collections.deque[float]:
        if self._fl is None:
            self._fl = collections.deque()
        return self._fl

    @failures.setter
    def failures(self, value: collections.deque[float]) -> None:
        self._fl = value

    def clear_failures(self) -> None:
        if self._fl:
            self._fl.clear()
        self.first_failure_time = None

    def set_params(self, params: Any) -> None:
        super().set_params(_interned_keys(params))

    def _set_status(self, value: Any) -> None:
        if self._ix is None:
            self._st = value
        else:
            self._ix.set_status(self, value)

    status = property(attrgetter("_st"), _set_status)

    def _set_priority(self, value: Any) -> None:
        if self._ix is None:
            self._pr = value
        else:
            self._ix.set_priority(self, value)

    priority = property(attrgetter("_pr"), _set_priority)

    def _set_deps(self, value: Any) -> None:
        if self._ix is None:
            self._dp = value
        else:
            self._ix.set_deps(self, value)

    deps = property(attrgetter("_dp"), _set_deps)

    def _set_resources(self, value: Any) -> None:
        if self._ix is None:
            self._rs = value
        else:
            self._ix.set_resources(self, value)

    resources = property(attrgetter("_rs"), _set_resources)

    def _set_family(self, value: Any) -> None:
        value = sys.intern(value) if type(value) is str else value
        if self._ix is None:
            self._fm = value
        else:
            self._ix.set_family(self, value)

    family = property(attrgetter("_fm"), _set_family)

    def _set_workers(self, value: Any) -> None:
        if type(value) is WorkerSet and value.belongs_to(self):
            return  # ``task.workers -= ids`` assigns back the set it changed in place
        workers = WorkerSet(value, task=self)
        if self._ix is None:
            self._wk = workers
        else:
            self._ix.set_workers(self, workers)

    workers = property(attrgetter("_wk"), _set_workers)

    def _set_remove(self, value: Any) -> None:
        self._rm = value
        if self._ix is not None:
            self._ix.remove_set(self, value)

    remove = property(attrgetter("_rm"), _set_remove)

    def __reduce_ex__(self, protocol: Any) -> Any:
        state = {k: v for k, v in self.__dict__.items() if k not in INDEX_FIELDS}
        state["_fl"] = self.failures
        for theirs, ours in RENAMED:
            if ours in state:
                state[theirs] = state.pop(ours)
        # What pickle itself writes for a plain object below protocol 2 (__newobj__ insists on
        # the object's own class).
        return copyreg._reconstructor, (luigi.scheduler.Task, object, None), state  # type: ignore[attr-defined]


def adopt(task: Any) -> IndexedTask:
    """Make ``task`` (a luigi Task) an IndexedTask in place, outside any index."""
    if type(task) is not IndexedTask:
        fields = task.__dict__
        task.__class__ = IndexedTask
        for theirs, ours in RENAMED:
            if theirs in fields:
                fields[ours] = fields.pop(theirs)
        fields.setdefault("_sq", 0)
        fields.setdefault("_nm", 0)
        fields.setdefault("_in", 0)
        if "_wk" in fields:
            fields["_wk"] = WorkerSet(fields["_wk"], task=task)
        if type(fields.get("_fm")) is str:
            fields["_fm"] = sys.intern(fields["_fm"])
    task._ix = None
    task._rk = None
    return task
