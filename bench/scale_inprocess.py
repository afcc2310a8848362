"""One in-process measurement of bench/scheduler_scale.py: one scheduler class, one size, in a fresh process.

Run by scheduler_scale.py as ``python bench/scale_inprocess.py TARGET SIZE BUDGET CALLS`` (a process
of its own, so the RSS growth belongs to this scheduler alone and a size that runs away can be
killed); prints one JSON object on stdout.

It builds the state (``scale_workload`` population: SIZE pending tasks from 4 workers), measuring
the process's resident set size before and after (``/proc/self/statm``, after ``gc.collect()``),
then times, each for at most CALLS calls and its share of BUDGET seconds (whichever ends first,
at least one call): ``task_list(status=PENDING)`` with the default ``max_shown_tasks``,
``count_pending``, ``prune``, ``worker_list``, ``inverse_dep_graph`` of a random task, the first
``get_work`` on its own, then ``get_work`` (rotating
workers; each task handed out is reported DONE, untimed, as a worker would), ``add_task`` of new
pending tasks, and ``add_task`` re-adding a pending task by its worker. With CALLS 0 it only builds
the state and reports its memory.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scale_workload import latency_stats, task_spec, worker_id

WORKERS = 4
# Share of the budget per measured operation; get_work, the slowest in stock luigi, gets the most.
SHARES = {"get_work": 0.4, "add_task_new": 0.12, "add_task_readd": 0.12, "count_pending": 0.12,
          "task_list_pending": 0.12, "prune": 0.12, "worker_list": 0.06, "inverse_dep_graph": 0.06}
# The slow, whole-state operations get fewer calls than the per-task ones.
# The first get_work after the build is timed on its own: it may carry work a scheduler deferred
# while tasks were added (ours checks new dependencies for cycles then), which a scheduler taking
# tasks and handing out work all the time spreads over many calls.
CALL_FRACTION = {"task_list_pending": 0.05, "prune": 0.05, "worker_list": 0.05, "inverse_dep_graph": 0.05,
                 "first_get_work": 0.0}


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def make_scheduler(target: str) -> Any:
    """A fresh scheduler of ``target``'s class, with luigi's default configuration and no state file."""
    if target == "stock":
        from luigi.scheduler import Scheduler
    else:
        from luigi_appliance.scheduler import Scheduler
    return Scheduler()


def build(scheduler: Any, size: int) -> float:
    """Add ``size`` pending tasks; return the seconds it took."""
    started = time.perf_counter()
    for index in range(size):
        scheduler.add_task(worker=worker_id(index % WORKERS), status="PENDING", **task_spec(index).add_task_kwargs())
    return time.perf_counter() - started


def timed(calls: int, seconds: float, call: Callable[[int], Any]) -> list[float]:
    """Time ``call(n)`` for n = 0, 1, ... until ``calls`` calls or ``seconds`` have passed (one call at least)."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < calls and (not samples or time.perf_counter() < deadline):
        started = time.perf_counter()
        call(len(samples))
        samples.append(time.perf_counter() - started)
    return samples


def measure(scheduler: Any, size: int, budget: float, calls: int) -> dict[str, list[float]]:
    rng = random.Random(size)
    handed_out: list[str] = []

    def get_work(n: int) -> None:
        reply = scheduler.get_work(worker=worker_id(n % WORKERS), host=f"bench-host-{n % WORKERS}")
        if reply.get("task_id"):
            handed_out.append(reply["task_id"])
            scheduler.add_task(worker=worker_id(n % WORKERS), task_id=reply["task_id"], status="DONE")

    def add_new(n: int) -> None:
        index = size + n
        scheduler.add_task(worker=worker_id(index % WORKERS), status="PENDING", **task_spec(index).add_task_kwargs())

    def readd(n: int) -> None:
        index = rng.randrange(size)
        scheduler.add_task(worker=worker_id(index % WORKERS), status="PENDING", **task_spec(index).add_task_kwargs())

    # The whole-state reads first, while exactly ``size`` tasks are pending for every class (at
    # 100k that is luigi's max_shown_tasks: one task more and task_list answers with a count only).
    operations: dict[str, Callable[[int], Any]] = {
        "task_list_pending": lambda n: scheduler.task_list(status="PENDING", upstream_status=""),
        "count_pending": lambda n: scheduler.count_pending(worker=worker_id(n % WORKERS)),
        "prune": lambda n: scheduler.prune(),
        "worker_list": lambda n: scheduler.worker_list(),
        "inverse_dep_graph": lambda n: scheduler.inverse_dep_graph(task_id=task_spec(rng.randrange(size)).task_id),
        "first_get_work": get_work,
        "get_work": get_work,
        "add_task_new": add_new,
        "add_task_readd": readd,
    }
    results = {}
    for name, call in operations.items():
        results[name] = timed(max(1, int(calls * CALL_FRACTION.get(name, 1.0))), budget * SHARES.get(name, 0), call)
    # Every timed get_work hands a task to a worker that reports it done at once, like a real one.
    results["handed_out"] = [float(len(handed_out))]
    return results


def run(target: str, size: int, budget: float, calls: int) -> dict[str, Any]:
    logging.disable(logging.WARNING)  # luigi logs every prune and disabled worker at INFO
    scheduler = make_scheduler(target)
    gc.collect()
    before = rss_bytes()
    build_s = build(scheduler, size)
    gc.collect()
    grown = rss_bytes() - before
    # CALLS 0: the memory figure alone, for a size too big for the timed calls.
    samples = measure(scheduler, size, budget, calls) if calls else {"handed_out": [0.0]}
    handed_out = int(samples.pop("handed_out")[0])
    return {"target": target, "size": size, "build_s": round(build_s, 3), "rss_delta_bytes": grown,
            "bytes_per_task": round(grown / size, 1), "get_work_handed_out": handed_out,
            "ops": {name: latency_stats(values) for name, values in samples.items()}}


def main(argv: list[str]) -> int:
    target, size, budget, calls = argv[0], int(argv[1]), float(argv[2]), int(argv[3])
    print(json.dumps(run(target, size, budget, calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
