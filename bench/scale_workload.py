"""The task population every part of bench/scheduler_scale.py schedules, and the helpers its parts share.

Task ``i`` (0-based) belongs to family ``FAMILIES[i % 5]`` and is added by worker ``i % workers``.
Tasks come in groups of four: the first task of a group has no dependencies, the other three depend
on it (so a quarter of the pending tasks are schedulable at any time). Priorities cycle through
0..9. Tasks of the ``Load`` family need one unit of the ``db`` resource (left unconfigured, so luigi's
default of one unit applies): a worker owning any such task is not "trivial" to luigi, whose
get_work then ranks every pending and running task, as it does on a real shared scheduler.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

FAMILIES = ("Extract", "Transform", "Load", "Report", "Audit")
GROUP = 4
RESOURCE_FAMILY = "Load"
RESOURCES = {"db": 1}


@dataclass(frozen=True)
class TaskSpec:
    """The add_task arguments (besides worker and status) of one task of the population."""

    task_id: str
    family: str
    params: dict[str, str]
    deps: list[str]
    priority: int
    resources: dict[str, int]

    def add_task_kwargs(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "family": self.family, "params": self.params, "deps": self.deps,
                "priority": self.priority, "resources": self.resources, "runnable": True}


def task_id(index: int) -> str:
    return f"{FAMILIES[index % len(FAMILIES)]}_{index:08d}"


def task_spec(index: int) -> TaskSpec:
    family = FAMILIES[index % len(FAMILIES)]
    head = index - index % GROUP
    return TaskSpec(task_id(index), family, {"part": str(index)}, [task_id(head)] if head != index else [],
                    index % 10, dict(RESOURCES) if family == RESOURCE_FAMILY else {})


def worker_id(index: int) -> str:
    return f"bench-worker-{index}"


def percentile(values: list[float], pct: int) -> float | None:
    """The ``pct``th percentile (inclusive method); None without samples."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def latency_stats(samples: list[float]) -> dict[str, Any]:
    """Count, p50 and p99 in milliseconds (None where there are no samples)."""
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    return {"n": len(samples), "p50_ms": None if p50 is None else round(p50 * 1000, 4),
            "p99_ms": None if p99 is None else round(p99 * 1000, 4)}


def size_label(size: int) -> str:
    """1000 -> 1k, 1000000 -> 1M, 200 -> 200."""
    if size >= 1_000_000 and size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size >= 1000 and size % 1000 == 0:
        return f"{size // 1000}k"
    return str(size)
