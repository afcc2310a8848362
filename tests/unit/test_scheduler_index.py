"""The scheduling core's data structures (luigi_appliance/scheduler/: ranked.py, workerset.py,
tasks.py, index.py) against what they stand for: a sorted list, luigi's OrderedSet, luigi's Task,
and the indexes recomputed from scratch over the state after every step of a random sequence."""

from __future__ import annotations

import pickle
import random
from typing import Any

import luigi.scheduler
import pytest
from luigi.task_status import DISABLED, DONE, FAILED, PENDING, RUNNING, UNKNOWN

from luigi_appliance.luigi_internals.scheduler import install_state, luigi_state
from luigi_appliance.scheduler import Scheduler
from luigi_appliance.scheduler.index import COUNTED, SchedulingIndex
from luigi_appliance.scheduler.ranked import LOAD, RankedSet
from luigi_appliance.scheduler.tasks import IndexedTask, adopt
from luigi_appliance.scheduler.workerset import WorkerSet


@pytest.mark.parametrize("seed", range(4))
def test_ranked_set_is_a_sorted_list(seed: int) -> None:
    rnd = random.Random(seed)  # noqa: S311 - a replayable sequence, not a secret
    ranked, model = RankedSet(), []
    for _ in range(6 * LOAD):
        if model and rnd.random() < 0.4:
            key = model.pop(rnd.randrange(len(model)))
            ranked.remove(key)
        else:
            key = (rnd.randrange(5), rnd.random())
            model.append(key)
            ranked.add(key)
        if rnd.random() < 0.01 or len(model) < 3:
            model.sort()
            assert list(ranked) == model and len(ranked) == len(model)
            probe = (rnd.randrange(5), rnd.random())
            assert list(ranked.walk_from(probe)) == [k for k in model if k >= probe]
            assert all(k in ranked for k in model[:10]) and probe not in ranked
    with pytest.raises(KeyError):
        ranked.remove((9, 0.5))


def test_worker_set_behaves_as_luigis_ordered_set() -> None:
    ours, theirs = WorkerSet(), luigi.scheduler.OrderedSet()
    steps: list[tuple[str, Any]] = [("add", "a"), ("add", "b"), ("add", "a"), ("add", "c"), ("discard", "b"),
                                    ("add", "b"), ("isub", {"a", "x"}), ("add", "a"), ("discard", "zz")]
    for op, arg in steps:
        for s in (ours, theirs):
            if op == "isub":
                s -= arg
            else:
                getattr(s, op)(arg)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)
        assert ours.peek(last=True) == theirs.peek(last=True) and ours.peek(last=False) == theirs.peek(last=False)
        assert ours == theirs and ("a" in ours) == ("a" in theirs)
    copy = pickle.loads(pickle.dumps(ours))  # noqa: S301 - our own bytes
    assert type(copy) is luigi.scheduler.OrderedSet and list(copy) == list(ours)
    ours -= ours
    with pytest.raises(KeyError):
        ours.peek()


def test_indexed_task_has_luigis_fields_and_pickles_as_luigis_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.time", lambda: 1000.0)
    args = dict(task_id="T", status=PENDING, deps=["a"], resources={"r": 1}, priority=3, family="F",
                module="m", params={"p": "1"}, param_visibilities={}, retry_policy="rp")
    stock, ours = luigi.scheduler.Task(**args), IndexedTask(**args)
    copy = pickle.loads(pickle.dumps(ours))  # noqa: S301 - our own bytes
    assert type(copy) is luigi.scheduler.Task
    assert vars(copy).keys() == vars(stock).keys()
    for name, value in vars(stock).items():
        if name == "workers":
            assert list(getattr(ours, name)) == list(value) == list(getattr(copy, name))
        elif name == "failures":
            assert list(ours.failures) == list(value) == list(copy.failures)
        else:
            assert getattr(ours, name) == value == getattr(copy, name), name
    adopted = adopt(copy)
    assert type(adopted) is IndexedTask and adopted.status == PENDING and adopted.deps == {"a"}


def _expected(scheduler: Scheduler) -> dict[str, Any]:
    """The indexes as they must be, recomputed from the state."""
    tasks = scheduler.task_state.get_active_tasks()
    known = {t.id: t for t in tasks}
    ready = [t for t in tasks if t.status == PENDING
             and all(d in known and known[d].status == DONE for d in t.deps)]
    order = {t.id: n for n, t in enumerate(scheduler.task_state.status_tasks(PENDING).values())}
    ready.sort(key=lambda t: (-t.priority, t.time, order[t.id]))
    per_worker: dict[str, list[int]] = {}
    for t in tasks:
        for w in t.workers:
            share = per_worker.setdefault(w, [0, 0, 0, 0, 0, 0, 0])
            share[0] += 1
            if t.status in COUNTED:
                share[1] += 1
                share[2] += len(t.workers) == 1
                share[3] += t.workers.peek(last=True) == w
            share[4] += t.status == PENDING and bool(t.resources)
            share[5] += t.status == PENDING
            share[6] += t.status == PENDING and len(t.workers) == 1
    return {"ready": [t.id for t in ready], "workers": per_worker}


def _actual(index: SchedulingIndex) -> dict[str, Any]:
    per_worker = {w: [r.tasks, r.counted, r.unique, r.last, r.with_resources, r.pending, r.pending_unique]
                  for w, r in index.workers.items()}
    for w, r in index.workers.items():
        assert [k[-1].id for k in r.ranked] == [k[-1].id for k in index.ranked if w in k[-1].workers]
    for family, ranked in index.families.items():
        assert [k[-1].id for k in ranked] == [k[-1].id for k in index.ranked if k[-1].family == family]
    return {"ready": [k[-1].id for k in index.ranked], "workers": per_worker}


@pytest.mark.parametrize("seed", range(3))
def test_indexes_equal_a_recomputation_after_every_step(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    rnd = random.Random(seed)  # noqa: S311 - a replayable sequence, not a secret
    scheduler = Scheduler(retry_delay=5, remove_delay=20, worker_disconnect_delay=30, disable_persist=15,
                          retry_count=2, disable_window=100)
    ids = [f"T{n}" for n in range(25)]
    workers = ["w1", "w2", "w3"]
    for step in range(600):
        now[0] += rnd.random() * 3
        op = rnd.random()
        worker = rnd.choice(workers)
        task_id = rnd.choice(ids)
        if op < 0.45:
            deps = rnd.sample(ids[:ids.index(task_id)], k=min(2, ids.index(task_id))) if rnd.random() < 0.5 else None
            scheduler.add_task(worker=worker, task_id=task_id, deps=deps, priority=rnd.randrange(3),
                               status=rnd.choice([PENDING, PENDING, DONE, FAILED, RUNNING, DISABLED, UNKNOWN]),
                               resources={"r": 1} if rnd.random() < 0.2 else None, family=rnd.choice("AB"),
                               new_deps=[rnd.choice(ids[:1])] if rnd.random() < 0.05 and task_id != ids[0] else None,
                               assistant=rnd.random() < 0.05)
        elif op < 0.7:
            scheduler.get_work(worker=worker, assistant=rnd.random() < 0.1, current_tasks=[])
        elif op < 0.8:
            scheduler.prune()
        elif op < 0.85:
            scheduler.disable_worker(worker=worker)
            workers[workers.index(worker)] = f"{worker}x"
        elif op < 0.9:
            now[0] += 25
        else:
            scheduler.mark_as_done(task_id=task_id)
        assert _actual(scheduler.index) == _expected(scheduler), f"seed {seed}, step {step}"
    restored = Scheduler()
    install_state(restored, pickle.loads(pickle.dumps(luigi_state(scheduler))))  # noqa: S301 - our own bytes
    assert _actual(restored.index) == _expected(restored)


def test_prune_forgets_a_task_an_assistant_finished_as_stock_does(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nobody is a stakeholder of a task only an assistant added; while RUNNING, prune leaves it
    # alone; once it is DONE, prune must give it a removal time (our prune visits it only because
    # leaving RUNNING made it a candidate) and later remove it.
    now = [1000.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    answers = []
    for cls in (luigi.scheduler.Scheduler, Scheduler):
        scheduler = cls(remove_delay=10, worker_disconnect_delay=1000)
        scheduler.add_task(worker="helper", task_id="A", assistant=True)
        now[0] += 1
        scheduler.get_work(worker="helper", assistant=True)
        scheduler.prune()
        now[0] += 1
        scheduler.add_task(worker="helper", task_id="A", status=DONE, assistant=True)
        scheduler.prune()
        seen = [sorted(scheduler.task_list("", ""))]
        now[0] += 20
        scheduler.prune()
        seen.append(sorted(scheduler.task_list("", "")))
        answers.append(seen)
    assert answers[0] == answers[1] == [["A"], []]


@pytest.mark.parametrize("trivial", [True, False])
@pytest.mark.parametrize("max_batch_size", [2, 3, float("inf")])
def test_batches_are_the_ones_stock_luigi_makes(trivial: bool, max_batch_size: float,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    answers = []
    for cls in (luigi.scheduler.Scheduler, Scheduler):
        scheduler = cls(resources={"r": 5})
        for worker in ("w1", "w2"):
            scheduler.add_worker(worker=worker, info={"workers": 1})
            scheduler.add_task_batcher(worker=worker, task_family="B", batched_args=["day"],
                                       max_batch_size=max_batch_size)
        if not trivial:
            scheduler.add_task(worker="w1", task_id="R", family="Other", resources={"r": 1}, priority=-5)
        rnd = random.Random(3)  # noqa: S311 - a replayable sequence, not a secret
        for n in range(14):
            now[0] += 1
            scheduler.add_task(worker=rnd.choice(["w1", "w1", "w2"]), task_id=f"B{n}", family="B",
                               params={"day": str(n), "site": rnd.choice("xy")}, batchable=rnd.random() < 0.8,
                               priority=rnd.randrange(2),
                               resources={"r": 1} if not trivial and rnd.random() < 0.3 else None)
        seen = []
        for step in range(8):
            reply = scheduler.get_work(worker=["w1", "w2"][step % 2], current_tasks=[])
            seen.append(reply)
            if reply.get("batch_id"):
                for task_id in reply["batch_task_ids"]:
                    scheduler.add_task(worker=["w1", "w2"][step % 2], task_id=task_id, status=DONE)
        answers.append(seen)
    assert answers[0] == answers[1]
    assert any(len(reply.get("batch_task_ids", [])) > 1 for reply in answers[0])
