"""Build a pipeline's static dependency graph and report what would keep it from running.

The graph is walked from the root task through ``requires()`` with an explicit stack (no
recursion limit) without running anything. Reported: every dependency cycle (one exact path per
strongly connected component), ``requires()`` that raise (with the pipeline's traceback), tasks
whose parameters fail to parse, one task id claimed by two task classes, and external tasks
whose outputs are missing now (a warning, or an error when strict).
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import luigi
import luigi.parameter
import luigi.task

from luigi_appliance.dag.cycles import cycle_path, cyclic_components

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    kind: str  # cycle | requires_error | parameter_error | duplicate_id | missing_external | complete_error
    severity: str
    task_id: str
    message: str
    detail: str = ""
    path: tuple[str, ...] = ()


@dataclass
class Node:
    task_id: str
    family: str
    cls: type
    external: bool
    deps: list[str] = field(default_factory=list)


@dataclass
class DagReport:
    """The graph and everything found wrong with it."""

    root_id: str
    nodes: dict[str, Node]
    problems: list[Problem]
    depth: int = 0
    widest: int = 0
    widest_level: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def cycles(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "cycle"]

    component: dict[str, int] = field(default_factory=dict)  # task id -> its cyclic component

    def in_cycle(self, task_id: str, dep: str) -> bool:
        """Is the edge task_id -> dep inside a cycle (both ends in one strongly connected component)?"""
        comp = self.component.get(task_id)
        return comp is not None and self.component.get(dep) == comp

    @property
    def ok(self) -> bool:
        return not self.errors


def _is_external(task: luigi.Task) -> bool:
    # The same test luigi's worker applies (luigi.worker._is_external).
    return task.run is None or task.run == NotImplemented


def _is_parameter_error(exc: BaseException) -> bool:
    if isinstance(exc, luigi.parameter.ParameterException):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and frames[-1].filename == luigi.parameter.__file__


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _pipeline_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class _Walker:
    def __init__(self, strict: bool):
        self.strict = strict
        self.nodes: dict[str, Node] = {}
        self.claimed: dict[str, type] = {}  # task id -> class, as soon as a task is seen
        self.problems: list[Problem] = []

    def walk(self, root: luigi.Task) -> None:
        self.claimed[root.task_id] = type(root)
        stack = [root]
        while stack:
            task = stack.pop()
            node = Node(task.task_id, task.task_family, type(task), _is_external(task))
            self.nodes[task.task_id] = node
            self._check_parameters(task)
            if node.external:
                self._check_external(task)
                continue
            deps = self._requirements(task)
            for dep in deps:
                node.deps.append(dep.task_id)
                owner = self.claimed.get(dep.task_id)
                if owner is None:
                    self.claimed[dep.task_id] = type(dep)
                    stack.append(dep)
                elif owner is not type(dep):
                    self.problems.append(Problem(
                        "duplicate_id", ERROR, dep.task_id,
                        f"task id {dep.task_id} is claimed by two classes: {_qualname(owner)} and "
                        f"{_qualname(type(dep))} (required by {task.task_id})"))

    def _check_parameters(self, task: luigi.Task) -> None:
        """Values go to the scheduler as strings and come back through parse() (assistant workers,
        re-runs); a value that does not survive that round trip breaks the task later."""
        for name, param in task.get_params():
            value = getattr(task, name)
            try:
                param.parse(param.serialize(value))
            except Exception as exc:
                self.problems.append(Problem(
                    "parameter_error", ERROR, task.task_id,
                    f"parameter {name}={value!r} fails to parse as {type(param).__name__}: "
                    f"{type(exc).__name__}: {exc}"))

    def _requirements(self, task: luigi.Task) -> list[luigi.Task]:
        try:
            deps = luigi.task.flatten(task.requires())
        except Exception as exc:
            kind = "parameter_error" if _is_parameter_error(exc) else "requires_error"
            what = ("a parameter of a required task failed to parse" if kind == "parameter_error"
                    else "requires() raised")
            self.problems.append(Problem(kind, ERROR, task.task_id, f"{what}: {type(exc).__name__}: {exc}",
                                         _pipeline_traceback(exc)))
            return []
        bad = [d for d in deps if not isinstance(d, luigi.Task)]
        if bad:
            self.problems.append(Problem("requires_error", ERROR, task.task_id,
                                         f"requires() must return Task objects, got {type(bad[0]).__name__}"))
        return [d for d in deps if isinstance(d, luigi.Task)]

    def _check_external(self, task: luigi.Task) -> None:
        try:
            complete = task.complete()
        except Exception as exc:
            self.problems.append(Problem("complete_error", ERROR, task.task_id,
                                         f"complete() raised: {type(exc).__name__}: {exc}", _pipeline_traceback(exc)))
            return
        if not complete:
            self.problems.append(Problem("missing_external", ERROR if self.strict else WARNING, task.task_id,
                                         "external task's output is missing now"))


def _find_cycles(nodes: dict[str, Node]) -> tuple[list[Problem], dict[str, int]]:
    def successors(task_id: str) -> list[str]:
        return nodes[task_id].deps if task_id in nodes else []

    problems = []
    membership: dict[str, int] = {}
    for number, component in enumerate(cyclic_components(list(nodes), successors)):
        membership.update(dict.fromkeys(component, number))
        path = cycle_path(component, successors)
        problems.append(Problem("cycle", ERROR, path[0], "dependency cycle: " + " -> ".join(path),
                                path=tuple(path)))
    return sorted(problems, key=lambda p: p.task_id), membership


def _levels(report: DagReport) -> tuple[int, int, int]:
    """(depth, widest level size, its level): a task's level is its longest distance from the
    root (Kahn's algorithm over the graph minus edges inside cycles, so the critical path counts)."""
    nodes, root_id = report.nodes, report.root_id
    indegree: Counter[str] = Counter()
    for node in nodes.values():
        for dep in node.deps:
            if not report.in_cycle(node.task_id, dep):
                indegree[dep] += 1
    level = {root_id: 0}
    ready = [root_id] if indegree[root_id] == 0 else []
    while ready:
        task_id = ready.pop()
        for dep in nodes[task_id].deps if task_id in nodes else []:
            if report.in_cycle(task_id, dep):
                continue
            level[dep] = max(level.get(dep, 0), level[task_id] + 1)
            indegree[dep] -= 1
            if indegree[dep] == 0:
                ready.append(dep)
    if not level:
        return 0, 0, 0
    widths = Counter(level.values())
    widest_level, widest = max(widths.items(), key=lambda kv: (kv[1], -kv[0]))
    return max(level.values()) + 1, widest, widest_level


@contextmanager
def _task_params_cached() -> Iterator[None]:
    """Luigi rebuilds a class's parameter list with dir() on every task instantiation (so classes
    can be extended at run time), which is two thirds of the time of walking a 100k-task graph.
    Classes do not change during one walk, so cache the lists for its duration only."""
    original = luigi.Task.__dict__["get_params"]
    cache: dict[type, list] = {}

    def get_params(cls: type) -> list:
        params = cache.get(cls)
        if params is None:
            params = cache[cls] = original.__func__(cls)
        return list(params)

    luigi.Task.get_params = classmethod(get_params)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        luigi.Task.get_params = original  # type: ignore[method-assign]


def check_task(root: luigi.Task, strict: bool = False) -> DagReport:
    """Walk ``root``'s dependencies and return the report (nothing is run)."""
    walker = _Walker(strict)
    with _task_params_cached():
        walker.walk(root)
    cycles, membership = _find_cycles(walker.nodes)
    report = DagReport(root.task_id, walker.nodes, cycles + walker.problems, component=membership)
    report.depth, report.widest, report.widest_level = _levels(report)
    return report


def as_dict(report: DagReport) -> dict[str, Any]:
    return {
        "root": report.root_id,
        "ok": report.ok,
        "summary": {"tasks": len(report.nodes), "depth": report.depth, "widest_level": report.widest_level,
                    "widest_level_tasks": report.widest, "errors": len(report.errors),
                    "warnings": len(report.warnings)},
        "problems": [{"kind": p.kind, "severity": p.severity, "task_id": p.task_id, "message": p.message,
                      **({"path": list(p.path)} if p.path else {}), **({"traceback": p.detail} if p.detail else {})}
                     for p in report.problems],
        "tasks": {n.task_id: {"family": n.family, "external": n.external, "deps": n.deps}
                  for n in report.nodes.values()},
    }
