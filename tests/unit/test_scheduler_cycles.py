"""The scheduler's incremental cycle check (luigi_appliance/scheduler/cycles.py) against the full
search it replaces: on seeded random graphs added top-down, bottom-up and in random order, with
cycles closed late by re-adds with other deps and by new_deps, and reopened by forgiving failed
tasks (which enter PENDING without any new edge), both schedulers get the same calls and must fail
the same tasks, in the same order, with the same message, at the same get_work."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest
from luigi.task_status import DONE, FAILED, PENDING

from luigi_appliance.dag.cycles import cycle_path, cyclic_components
from luigi_appliance.luigi_internals.scheduler import install_state, luigi_state
from luigi_appliance.scheduler import Scheduler

WORKER = "w"
SEEDS = 80


class FullSearch(Scheduler):
    """The check before it was incremental: every task reachable from the marked ones, searched
    on every get_work that follows a marking add_task."""

    def fail_cycles(self) -> list[list[str]]:
        starts = sorted(self._new_edges)
        self._new_edges.clear()
        cycles = []
        for component in cyclic_components(starts, self._pending_deps):
            path = cycle_path(component, self._pending_deps)
            message = "dependency cycle: " + " -> ".join(path)
            for task_id in component:
                task = self.task_record(task_id)
                assert task is not None
                task.expl = message
                task.status_message = message
                self.record_status(task, FAILED)
            cycles.append(path)
        return cycles


class IgnoresDepsChanges(Scheduler):
    """A wrong incremental check: a re-add that changes a known task's deps is not looked at."""

    muted = False

    def _catch_up(self) -> None:
        self.muted = False
        super()._catch_up()
        self.muted = True  # until the next catch-up: add_task's own note for changed deps

    def _note(self, task: Any) -> None:
        if not self.muted:
            super()._note(task)


class IgnoresEnteringPending(Scheduler):
    """A wrong incremental check: only the task of each add_task is looked at, so a task entering
    PENDING elsewhere (forgive_failures) can reopen a cycle unseen."""

    def _catch_up(self) -> None:
        self._seen_entry = 1 << 62
        super()._catch_up()


class IgnoresRestores(Scheduler):
    """A wrong incremental check: a state installed is taken for the one it replaced."""

    def _catch_up(self) -> None:
        if self._seen_state is not None:
            self._seen_state = self.task_records()
        super()._catch_up()


def _graph(rnd: random.Random, size: int) -> dict[str, list[str]]:
    """A random DAG on ``size`` tasks (deps point to higher numbers), a few edges back added."""
    names = [f"T{n:02d}" for n in range(size)]
    graph = {name: sorted(rnd.sample(names[n + 1:], min(len(names) - n - 1, rnd.randrange(4))))
             for n, name in enumerate(names)}
    for _ in range(rnd.randrange(3)):
        low, high = sorted(rnd.sample(range(size), 2))
        graph[names[high]].append(names[low])  # closes a cycle (or a self-loop below)
    if rnd.random() < 0.2:
        name = rnd.choice(names)
        graph[name].append(name)
    return graph


def _calls(rnd: random.Random, order: str) -> list[tuple[str, dict[str, Any]]]:
    """One random sequence of scheduler calls."""
    graph = _graph(rnd, rnd.randrange(5, 30))
    names = list(graph)
    if order == "bottom-up":
        names.reverse()
    elif order == "random":
        rnd.shuffle(names)
    calls: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        status = rnd.choices([PENDING, DONE, FAILED], [8, 1, 1])[0]
        calls.append(("add_task", {"task_id": name, "deps": graph[name], "status": status}))
        if rnd.random() < 0.1:
            calls.append(("get_work", {}))
    calls.append(("get_work", {}))
    for _ in range(rnd.randrange(25)):
        name, other = rnd.choice(names), rnd.choice(names)
        kind = rnd.randrange(7)
        if kind == 0:  # a late re-add with other deps
            calls.append(("add_task", {"task_id": name, "deps": sorted({other, *rnd.sample(names, 2)})}))
        elif kind == 1:  # dynamic dependencies
            calls.append(("add_task", {"task_id": name, "new_deps": [other], "status": PENDING}))
        elif kind == 2:  # a failed task (one failed as a cycle too) back to PENDING, no new edge
            calls.append(("forgive_failures", {"task_id": name}))
        elif kind == 3:  # a re-add without deps: no mark, maybe a status change
            calls.append(("add_task", {"task_id": name, "status": rnd.choice([PENDING, DONE, FAILED])}))
        elif kind == 4:  # a snapshot restored: another state, pending cycles included
            calls.append(("restore", {}))
        else:
            calls.append(("get_work", {}))
    calls.append(("get_work", {}))
    return calls


def _call(scheduler: Scheduler, method: str, kwargs: dict[str, Any]) -> Any:
    if method == "restore":
        return install_state(scheduler, pickle.loads(pickle.dumps(luigi_state(scheduler))))  # noqa: S301 - our own
    if method == "add_task":
        kwargs = {**kwargs, "worker": WORKER}
    elif method == "get_work":
        kwargs = {"worker": WORKER}
    return getattr(scheduler, method)(**kwargs)


def _outcome(scheduler: Scheduler) -> list[tuple[str, Any, Any]]:
    """Every task's status and message, the failed ones in the order they failed."""
    failed = list(scheduler.task_state.status_tasks(FAILED))
    return [(task.id, task.status, task.expl) for task in scheduler.task_records().values()] + [
        (task_id, FAILED, None) for task_id in failed]


def _first_divergence(cls: type[Scheduler], seed: int, order: str) -> str | None:
    rnd = random.Random(seed)  # noqa: S311 - a replayable sequence, not a secret
    calls = _calls(rnd, order)
    ours, reference = cls(), FullSearch()
    for step, (method, kwargs) in enumerate(calls):
        answers = [_call(scheduler, method, kwargs) for scheduler in (ours, reference)]
        if answers[0] != answers[1] or _outcome(ours) != _outcome(reference):
            return f"step {step} {method}({kwargs}): {answers[0]} != {answers[1]}"
    return None


@pytest.mark.parametrize("order", ["top-down", "bottom-up", "random"])
def test_incremental_check_fails_what_the_full_search_fails(order: str) -> None:
    for seed in range(SEEDS):
        assert _first_divergence(Scheduler, seed, order) is None, f"seed {seed}"


def test_sequences_do_fail_cycles() -> None:
    # the comparison means something only if cycles are found and failed, early and late
    failed = 0
    for seed in range(50):
        rnd = random.Random(seed)  # noqa: S311 - a replayable sequence, not a secret
        reference = FullSearch()
        for method, kwargs in _calls(rnd, "random"):
            _call(reference, method, kwargs)
        failed += any((task.expl or "").startswith("dependency cycle") for task in reference.task_records().values())
    assert failed > 10


@pytest.mark.parametrize("wrong", [IgnoresDepsChanges, IgnoresEnteringPending, IgnoresRestores])
def test_the_comparison_catches_a_wrong_check(wrong: type[Scheduler]) -> None:
    assert any(_first_divergence(wrong, seed, order) is not None
               for seed in range(SEEDS) for order in ("top-down", "bottom-up", "random"))
