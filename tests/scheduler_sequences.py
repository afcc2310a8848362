"""Seeded random RPC sequences, replayed on two schedulers at once and compared answer by answer.

Used by tests/system/test_scheduler_differential.py: a reference (stock ``luigi.scheduler.Scheduler``)
and a candidate (``luigi_appliance.scheduler.Scheduler``) are built with the same config, then a
generator plays workers, assistants and visualiser users against both. Every answer, and every
few steps a canonical view of the whole state, must be equal; the first difference raises
``Divergence`` with the seed, the step and the last RPCs, enough to replay it.

Why the sequences are shaped as they are:
- Time is a fake clock (``Clock``) that only the driver moves, between steps and never during one,
  by a distinct amount each step: the two implementations may read ``time.time()`` a different
  number of times, and distinct creation times keep tasks of equal priority in a fixed order.
- Stock luigi orders tasks of equal rank (same priority and same creation time) by the memory
  addresses of its Task objects on one path (``Worker.get_tasks`` iterates a set of them), so that
  order is not a property of the answer. Equal ranks are avoided by construction: a step creates
  at most one task that can ever be scheduled (its ``add_task`` target); a dependency is either a
  task that already exists (it was added in an earlier step and is not pruned) or a "phantom" id
  that is never added, so it stays UNKNOWN and is never a candidate. Priority ties stay, and the
  creation time breaks them.
- No dependency cycles: a task only depends on tasks with a smaller index (our scheduler fails
  cycles on purpose; that difference is tested elsewhere).
- No UNKNOWN task has dependencies (a worker reports UNKNOWN, "complete() failed", without any).
  Stock luigi's upstream status memo (``_upstream_status``, shared across the tasks of one
  ``count_pending``) cannot tell "UNKNOWN, nothing upstream" from "not computed yet", so for an
  UNKNOWN task with dependencies the answer depends on the order the worker's tasks are visited,
  which again is the memory-address order of a set: stock disagrees with itself there.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import luigi.scheduler
from luigi.task_status import BATCH_RUNNING, DISABLED, DONE, FAILED, PENDING, RUNNING, SUSPENDED, UNKNOWN

from luigi_appliance.luigi_internals.scheduler import luigi_state

START = 1_000_000.0
FAMILIES = ("Plain", "Batched", "Heavy")
RESOURCES = {"cpu": 3, "gpu": 1}
UPSTREAM = ("", "UPSTREAM_RUNNING", "UPSTREAM_MISSING_INPUT", "UPSTREAM_FAILED", "UPSTREAM_DISABLED")
ADD_STATUSES = (PENDING, PENDING, PENDING, RUNNING, DONE, DONE, FAILED, FAILED, DISABLED, UNKNOWN, SUSPENDED)
LIST_STATUSES = ("", PENDING, RUNNING, DONE, FAILED, DISABLED, UNKNOWN, BATCH_RUNNING)


class Clock:
    """The fake ``time.time``: moves only when the driver says so. Also the fake ``uuid.uuid4``
    (send_scheduler_message's message ids): the n-th id of an RPC is the same for both schedulers."""

    def __init__(self, now: float = START):
        self.now = now
        self.ids = 0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def uuid4(self) -> uuid.UUID:
        self.ids += 1
        return uuid.UUID(int=int(self.now * 1000) * 1000 + self.ids)


@dataclass(frozen=True)
class Profile:
    """The scheduler config one sequence runs with (short delays so they expire within a run)."""

    retry_delay: float = 25.0
    remove_delay: float = 60.0
    worker_disconnect_delay: float = 40.0
    disable_window: int = 50
    retry_count: int = 3
    disable_hard_timeout: int = 400
    disable_persist: int = 90
    stable_done_cooldown_secs: int = 5
    max_shown_tasks: int = 40
    max_graph_nodes: int = 30
    prune_on_get_work: bool = False
    pause_enabled: bool = True
    send_messages: bool = True
    batch_emails: bool = False

    def config(self) -> luigi.scheduler.scheduler:
        return luigi.scheduler.scheduler(**vars(self))


class Divergence(AssertionError):
    """The two schedulers answered (or ended up) differently."""


@dataclass
class Call:
    """One RPC of a sequence."""

    step: int
    method: str
    kwargs: dict[str, Any]

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"step {self.step}: {self.method}({args})"


def canonical(value: Any, key: str | None = None) -> Any:
    """A deep, order-normalised copy of an answer: lists luigi builds from sets are sorted."""
    if isinstance(value, dict):
        return {k: canonical(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [canonical(v) for v in value]
        if key in ("deps", "running_tasks") or isinstance(value, (set, frozenset)):
            items.sort(key=repr)
        return items
    return value


def state_view(scheduler: luigi.scheduler.Scheduler) -> dict[str, Any]:
    """What both schedulers must agree on at any time: tasks and active workers."""
    tasks, workers, batchers = luigi_state(scheduler)[:3]
    return {
        "tasks": {tid: {
            "status": t.status, "priority": t.priority, "workers": list(t.workers),
            "deps": sorted(t.deps), "resources": dict(t.resources or {}),
            "stakeholders": sorted(t.stakeholders), "family": t.family, "params": dict(t.params),
            "worker_running": t.worker_running, "batch_id": t.batch_id, "time": t.time,
            "updated": getattr(t, "updated", None), "retry": t.retry, "remove": t.remove,
            "scheduler_disable_time": t.scheduler_disable_time, "expl": t.expl,
        } for tid, t in tasks.items()},
        "workers": {wid: {"info": dict(w.info), "disabled": w.disabled, "last_active": w.last_active,
                          "last_get_work": w.last_get_work, "started": w.started,
                          "messages": len(w.rpc_messages)}
                    for wid, w in workers.items()},
        "batchers": canonical(batchers),
    }


def outcome(call: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[str, Any]:
    """The answer of one RPC, or the type of the exception it raised."""
    try:
        return "answer", canonical(call(**kwargs))
    except Exception as exc:  # a raise is an answer, compared like any other
        return "raised", type(exc).__name__


@dataclass
class Pair:
    """A reference and a candidate scheduler, fed the same calls, compared on every answer."""

    reference: luigi.scheduler.Scheduler
    candidate: luigi.scheduler.Scheduler
    seed: int
    clock: Clock
    history: deque[Call] = field(default_factory=lambda: deque(maxlen=20))
    counts: Counter[str] = field(default_factory=Counter)

    def call(self, step: int, method: str, **kwargs: Any) -> Any:
        self.history.append(Call(step, method, kwargs))
        self.counts[method] += 1
        self.clock.ids = 0
        want = outcome(getattr(self.reference, method), copy.deepcopy(kwargs))
        self.clock.ids = 0
        got = outcome(getattr(self.candidate, method), copy.deepcopy(kwargs))
        if want != got:
            self.fail(step, f"{method} answered\n  stock: {want!r}\n  ours:  {got!r}")
        return want[1] if want[0] == "answer" else None

    def check_state(self, step: int) -> None:
        want, got = state_view(self.reference), state_view(self.candidate)
        if want != got:
            self.fail(step, "state differs after the step:\n" + describe_difference(want, got))

    def fail(self, step: int, what: str) -> None:
        calls = "\n".join(f"  {call}" for call in self.history)
        raise Divergence(f"seed {self.seed}, step {step}: {what}\nlast RPCs:\n{calls}")


def describe_difference(want: dict[str, Any], got: dict[str, Any]) -> str:
    """The first few entries of two state views that differ."""
    lines = []
    for part in want:
        for key in sorted(set(want[part]) | set(got[part]) if isinstance(want[part], dict) else [part]):
            a, b = want[part].get(key), got[part].get(key)
            if a != b:
                lines.append(f"  {part}[{key!r}]\n    stock: {a!r}\n    ours:  {b!r}")
    return "\n".join(lines[:5])


@dataclass
class Workload:
    """The generator: workers, their tasks and the visualiser's questions, drawn from one seed."""

    pair: Pair
    rng: random.Random
    clock: Clock
    profile: Profile
    ids: list[str] = field(default_factory=list)  # real task ids by index; index order forbids cycles
    workers: list[str] = field(default_factory=lambda: ["w0", "w1", "w2", "w3"])
    assistant: str = "helper"
    granted: dict[str, list[str]] = field(default_factory=dict)  # worker -> task ids get_work gave it
    batches: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (worker, batch_id, params)
    phantoms: int = 0
    step: int = 0
    paused: bool = False

    # -- choosing ids ---------------------------------------------------------------------------
    def existing(self, below: int | None = None) -> list[str]:
        """Real ids the reference still holds (so referencing them creates no task)."""
        tasks = luigi_state(self.pair.reference)[0]
        return [tid for tid in self.ids[:below] if tid in tasks]

    def new_id(self, family: str) -> str:
        self.ids.append(f"{family}_{len(self.ids):05d}")
        return self.ids[-1]

    def phantom(self) -> str:
        self.phantoms += 1
        return f"Ghost_{self.phantoms:04d}"

    def any_id(self) -> str:
        pick = self.rng.random()
        if pick < 0.3:
            status = self.rng.choice((DISABLED, FAILED, RUNNING, DONE, PENDING, BATCH_RUNNING))
            tasks = [t.id for t in luigi_state(self.pair.reference)[0].values() if t.status == status]
            if tasks:
                return self.rng.choice(sorted(tasks))
        if pick < 0.4 or not self.ids:
            return self.phantom() if pick < 0.35 else "Never_added"
        return self.rng.choice(self.ids[-60:] if pick < 0.7 else self.ids)

    def scheduler_disabled(self) -> str | None:
        """A task the scheduler disabled for excessive failures, if any (re_enable_task's target)."""
        tasks = sorted(t.id for t in luigi_state(self.pair.reference)[0].values() if t.scheduler_disable_time)
        return self.rng.choice(tasks) if tasks else None

    def worker(self) -> str:
        return self.rng.choice(self.workers)

    def deps_for(self, index: int) -> list[str]:
        known = self.existing(index)[-40:]
        deps = self.rng.sample(known, min(len(known), self.rng.choice((0, 0, 1, 1, 2, 3))))
        if self.rng.random() < 0.08:
            deps.append(self.phantom())
        return deps

    # -- the RPCs -------------------------------------------------------------------------------
    def task_args(self, task_id: str, family: str) -> dict[str, Any]:
        index = int(task_id.rsplit("_", 1)[1])
        args: dict[str, Any] = {
            "task_id": task_id, "family": family, "module": "pipelines",
            "params": {"n": str(index), "day": f"2026-12-{self.rng.choice((1, 1, 1, 2)):02d}"},
            "priority": self.rng.choice((0, 0, 0, 1, 5, 10, -1)),
        }
        if family == "Heavy":
            args["resources"] = self.rng.choice(({"cpu": 1}, {"cpu": 2}, {"gpu": 1}, {"cpu": 1, "gpu": 1}, {"disk": 1}))
        if family == "Batched":
            args["batchable"] = self.rng.random() < 0.8
        if self.rng.random() < 0.1:
            args["param_visibilities"] = {"day": 1}
        if self.rng.random() < 0.05:
            args["retry_policy_dict"] = {"retry_count": 1}
        return args

    def add_new_task(self) -> None:
        family = self.rng.choice(FAMILIES)
        task_id = self.new_id(family)
        args = self.task_args(task_id, family)
        args["deps"] = [] if family == "Batched" and self.rng.random() < 0.6 else self.deps_for(len(self.ids) - 1)
        args["status"] = self.rng.choice((PENDING,) * 6 + (DONE, DONE, RUNNING, FAILED, UNKNOWN, DISABLED))
        self.add_task(args)

    def re_add_task(self) -> None:
        known = self.existing() or self.ids
        if not known:
            return self.add_new_task()
        task_id = self.rng.choice(known[-50:])
        family = task_id.split("_")[0]
        args = self.task_args(task_id, family)
        args["status"] = self.rng.choice(ADD_STATUSES)
        if self.rng.random() < 0.3:
            args["deps"] = self.deps_for(int(task_id.rsplit("_", 1)[1]))
        if self.rng.random() < 0.1:
            args["new_deps"] = self.deps_for(int(task_id.rsplit("_", 1)[1]))
        if self.rng.random() < 0.15:
            args["expl"] = "boom"
        if self.rng.random() < 0.1:
            args["runnable"] = False
        self.add_task(args)

    def add_task(self, args: dict[str, Any]) -> None:
        if args["status"] == UNKNOWN:
            task = luigi_state(self.pair.reference)[0].get(args["task_id"])
            if task is not None and task.deps:
                args["status"] = PENDING
            else:
                args.pop("deps", None), args.pop("new_deps", None)
        assistant = self.rng.random() < 0.05
        args.setdefault("worker", self.assistant if assistant else self.worker())
        if assistant:
            args["assistant"] = True
        self.pair.call(self.step, "add_task", **args)

    def report(self) -> None:
        """A worker says how a task it was given went (or went on)."""
        holders = [w for w, tasks in self.granted.items() if tasks]
        if not holders:
            return self.get_work()
        worker = self.rng.choice(holders)
        task_id = self.rng.choice(self.granted[worker])
        status = self.rng.choice((DONE, DONE, FAILED, RUNNING, PENDING))
        if status != RUNNING:
            self.granted[worker].remove(task_id)
        family = task_id.split("_")[0]
        args = {"task_id": task_id, "status": status, "worker": worker, "family": family,
                "runnable": True, "expl": "failed: exit 1" if status == FAILED else None}
        if self.rng.random() < 0.3:
            args["new_deps"] = self.deps_for(int(task_id.rsplit("_", 1)[1])) if "_" in task_id else []
        self.pair.call(self.step, "add_task", **args)

    def run_batch(self) -> None:
        """A worker starts (and later finishes) the batch task get_work handed it."""
        worker, batch_id, params = self.batches.pop(self.rng.randrange(len(self.batches)))
        task_id = self.new_id("Batched")
        self.pair.call(self.step, "add_task", task_id=task_id, status=RUNNING, worker=worker, family="Batched",
                       params=params, batch_id=batch_id, batchable=True, deps=[], runnable=True)
        self.granted.setdefault(worker, []).append(task_id)

    def get_work(self) -> None:
        assistant = self.rng.random() < 0.12
        worker = self.assistant if assistant else self.worker()
        kwargs: dict[str, Any] = {"worker": worker, "host": "host-" + worker}
        if assistant:
            kwargs["assistant"] = True
        if self.rng.random() < 0.5:
            mine = self.granted.get(worker, [])
            kwargs["current_tasks"] = self.rng.sample(mine, self.rng.randint(0, len(mine)))
        reply = self.pair.call(self.step, "get_work", **kwargs)
        if not isinstance(reply, dict):
            return
        if reply.get("task_id"):
            self.granted.setdefault(worker, []).append(reply["task_id"])
        elif reply.get("batch_id"):
            self.batches.append((worker, reply["batch_id"], reply["task_params"]))

    def ask(self) -> None:
        """A visualiser (or an operator's command) question, or a small operator action."""
        rng, task_id, worker = self.rng, self.any_id(), self.worker()
        method, kwargs = rng.choice([
            ("ping", {"worker": worker}),
            ("count_pending", {"worker": worker}),
            ("task_list", {"status": rng.choice(LIST_STATUSES), "upstream_status": rng.choice(UPSTREAM),
                           "limit": rng.random() < 0.7,
                           "search": rng.choice((None, None, "", "Heavy", "n=1", "plain 2026")),
                           "max_shown_tasks": rng.choice((None, 3, 10, 1000))}),
            ("task_list", {"status": rng.choice(LIST_STATUSES), "upstream_status": "", "limit": False}),
            ("worker_list", {"include_running": rng.random() < 0.8}),
            ("resource_list", {}),
            ("dep_graph", {"task_id": task_id, "include_done": rng.random() < 0.5}),
            ("inverse_dep_graph", {"task_id": task_id, "include_done": rng.random() < 0.5}),
            ("graph", {}),
            ("task_search", {"task_str": rng.choice(("Heavy", "_000", "Ghost"))}),
            ("mark_as_done", {"task_id": task_id}),
            ("forgive_failures", {"task_id": task_id}),
            ("re_enable_task", {"task_id": self.scheduler_disabled() or task_id}),
            ("fetch_error", {"task_id": task_id}),
            ("set_task_status_message", {"task_id": task_id, "status_message": f"at step {self.step}"}),
            ("get_task_status_message", {"task_id": task_id}),
            ("set_task_progress_percentage", {"task_id": task_id, "progress_percentage": rng.randint(0, 100)}),
            ("get_task_progress_percentage", {"task_id": task_id}),
            ("decrease_running_task_resources", {"task_id": task_id, "decrease_resources": {"cpu": 1}}),
            ("get_running_task_resources", {"task_id": task_id}),
            ("set_worker_processes", {"worker": worker, "n": rng.randint(1, 4)}),
            ("add_worker", {"worker": worker,
                            "info": {"workers": rng.randint(1, 3), "host": "h", "first_task": task_id}}),
            ("add_task_batcher", {"worker": worker, "task_family": "Batched", "batched_args": ["n"],
                                  "max_batch_size": rng.choice((2, 3, 50))}),
            ("update_resource", {"resource": rng.choice(("cpu", "gpu", "disk")),
                                 "amount": rng.choice((0, 1, 2, 4, -1, "x"))}),
            ("prune", {}),
            ("is_paused", {}),
            ("is_pause_enabled", {}),
            ("has_task_history", {}),
            ("send_scheduler_message", {"worker": worker, "task": task_id, "content": "scale up"}),
            ("announce_scheduling_failure", {"task_name": task_id, "family": "Plain", "params": {"n": "1"},
                                             "expl": "no", "owners": [], "worker": worker}),
            ("report_task_statistics", {"task_id": task_id, "statistics": {"rows": 1}}),
            ("update_metrics_task_started", {"task": {"task_id": task_id}}),
        ])
        self.pair.call(self.step, method, **kwargs)

    def answer_message(self) -> None:
        """A worker answers a scheduler message it fetched with ping (or one it never got); someone
        reads the answer."""
        reply = self.pair.call(self.step, "ping", worker=self.worker())
        messages = [m["kwargs"] for m in (reply or {}).get("rpc_messages", [])
                    if m["name"] == "dispatch_scheduler_message"]
        for kwargs in messages or [{"task_id": self.any_id(), "message_id": "never-sent"}]:
            self.pair.call(self.step, "add_scheduler_message_response", task_id=kwargs["task_id"],
                           message_id=kwargs["message_id"], response="done")
            self.pair.call(self.step, "get_scheduler_message_response", task_id=kwargs["task_id"],
                           message_id=kwargs["message_id"])

    def rare(self) -> None:
        """Actions that change the whole picture: pause, a disabled worker, a new worker, an assistant."""
        choice = self.rng.randrange(6)
        if choice == 0:
            self.pair.call(self.step, "pause")
            self.paused = True
        elif choice == 1:
            self.unpause()
        elif choice == 2:
            worker = self.workers.pop(self.rng.randrange(len(self.workers)))
            self.pair.call(self.step, "disable_worker", worker=worker)
            self.workers.append(f"w{len(self.workers) + self.step}")
        elif choice == 3:
            self.pair.call(self.step, "add_worker", worker=self.assistant, info={"assistant": True, "workers": 2})
            self.pair.call(self.step, "add_task_batcher", worker=self.worker(), task_family="Batched",
                           batched_args=["n"], max_batch_size=self.rng.choice((2, 4)))
        elif choice == 4:
            self.pair.call(self.step, "update_resources", cpu=self.rng.randint(1, 4))
        else:
            self.pair.call(self.step, "add_worker", worker=self.worker(), info={"workers": self.rng.randint(1, 3)})

    def unpause(self) -> None:
        self.pair.call(self.step, "unpause")
        self.paused = False

    def tick(self) -> None:
        """Time between steps: mostly a second, sometimes past a retry, disable or removal delay."""
        delays = [d for d in (self.profile.retry_delay, self.profile.worker_disconnect_delay, self.profile.remove_delay,
                              self.profile.disable_persist, self.profile.disable_window) if 0 < d < 3600]
        if self.rng.random() < 0.03:
            self.clock.advance(self.rng.choice(delays) + self.rng.random() * 10 + 0.5)
        else:
            self.clock.advance(1.0 + self.rng.random() / 8)

    def play(self, steps: int, check_every: int = 10) -> Counter[str]:
        """Run ``steps`` steps; return how many times each RPC was called."""
        actions: list[tuple[float, Callable[[], None]]] = [
            (0.20, self.add_new_task), (0.12, self.re_add_task), (0.12, self.report),
            (0.22, self.get_work), (0.28, self.ask), (0.02, self.answer_message), (0.04, self.rare),
        ]
        weights = [w for w, _ in actions]
        for self.step in range(steps):
            self.tick()
            if self.batches and self.rng.random() < 0.5:
                self.run_batch()
            elif self.paused and self.rng.random() < 0.1:
                self.unpause()  # a pause lasts about ten steps
            else:
                self.rng.choices([a for _, a in actions], weights)[0]()
            if self.step % check_every == 0:
                self.pair.check_state(self.step)
        self.pair.check_state(self.step)
        return self.pair.counts


def replay(seed: int, steps: int, make_reference: Callable[..., luigi.scheduler.Scheduler],
           make_candidate: Callable[..., luigi.scheduler.Scheduler], clock: Clock,
           profile: Profile = Profile()) -> Counter[str]:
    """Build both schedulers with ``profile``'s config and play the sequence of ``seed``."""
    config = profile.config()
    pair = Pair(make_reference(config=config, resources=dict(RESOURCES)),
                make_candidate(config=config, resources=dict(RESOURCES)), seed, clock)
    rng = random.Random(seed)  # noqa: S311 - a replayable sequence, not a secret
    return Workload(pair, rng, clock, profile).play(steps)
