"""Build a pipeline's dependency graph and report what would keep it from running.

The graph is walked from the root task through ``deps()`` (luigi's worker's own call: the
flattened ``requires()``) with an explicit stack (no recursion limit) without running anything.
Two walks:

* static (``dag check``): every task's requirements, whatever is already complete; only external
  tasks' ``complete()`` is called, to see whether their data is there.
* as luigi's worker walks (``run``'s preflight, ``as_worker=True``): ``complete()`` of each task
  as it is discovered, the root's first, and no requirements of a task that is complete (or whose
  ``complete()`` raised, or that is external): luigi never calls ``requires()`` of such a task, so
  neither does the preflight. Each task's ``complete()`` and ``deps()`` answers are kept
  (``DagReport.answers``) for the worker to use instead of calling them a second time.

Reported: every dependency cycle (one exact path per strongly connected component), ``deps()``
that raise (with the pipeline's traceback), tasks whose parameters fail to parse, one task id
claimed by two task classes, and external tasks whose outputs are missing now (a warning, or an
error when strict).
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
from luigi_appliance.gc_freezing import survivors_frozen
from luigi_appliance.luigi_internals.worker import Completion, TaskAnswers

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    kind: str  # cycle | requires_error | parameter_error | duplicate_id | missing_external | complete_error
    severity: str
    task_id: str
    message: str
    detail: str = ""
    path: tuple[str, ...] = ()  # task ids
    name: str = ""  # the task as luigi prints it: str(task), e.g. Extract(date=2026-01-01)
    path_names: tuple[str, ...] = ()  # the path's tasks as luigi prints them

    @property
    def subject(self) -> str:
        """Who the problem is about, for people: the task's name, else its id (or family)."""
        return self.name or self.task_id


@dataclass
class Node:
    task_id: str
    family: str
    cls: type
    external: bool
    deps: list[str] = field(default_factory=list)
    task: luigi.Task | None = None
    complete: bool | None = None  # None: not asked (static walk), or complete() raised


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
    answers: TaskAnswers = field(default_factory=TaskAnswers)  # as_worker walks: complete()/deps() answers

    def name(self, task_id: str) -> str:
        """The task as luigi prints it (``str(task)``), or its id when the walk never built it."""
        node = self.nodes.get(task_id)
        return str(node.task) if node is not None and node.task is not None else task_id

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
    def __init__(self, strict: bool, as_worker: bool):
        self.strict = strict
        self.as_worker = as_worker
        self.nodes: dict[str, Node] = {}
        self.claimed: dict[str, type] = {}  # task id -> class, as soon as a task is seen
        self.problems: list[Problem] = []
        self.answers = TaskAnswers()

    def walk(self, root: luigi.Task) -> None:
        """luigi's Worker.add order: a stack of discovered tasks, each task's complete() asked
        when it is discovered (as_worker), its deps() when it is taken off the stack."""
        self.claimed[root.task_id] = type(root)
        stack = [(root, self._completion(root))]
        while stack:
            task, completion = stack.pop()
            node = Node(task.task_id, task.task_family, type(task), _is_external(task), task=task,
                        complete=completion.value if completion is not None and completion.error is None else None)
            self.nodes[task.task_id] = node
            self._check_parameters(task)
            if completion is not None and not completion.walks_deps():
                continue  # luigi's worker does not ask a complete task (or a failing complete()) for deps
            if node.external:
                self._check_external(task, completion)
                continue
            deps = self._requirements(task)
            if self.as_worker:
                self.answers.deps[task.task_id] = deps
            for dep in deps:
                node.deps.append(dep.task_id)
                owner = self.claimed.get(dep.task_id)
                if owner is None:
                    self.claimed[dep.task_id] = type(dep)
                    stack.append((dep, self._completion(dep)))
                elif owner is not type(dep):
                    self.problems.append(Problem(
                        "duplicate_id", ERROR, dep.task_id,
                        f"task id {dep.task_id} is claimed by two classes: {_qualname(owner)} and "
                        f"{_qualname(type(dep))} (required by {task})", name=str(dep)))

    def _completion(self, task: luigi.Task) -> Completion | None:
        if not self.as_worker:
            return None
        completion = Completion.of(task)
        self.answers.complete[task.task_id] = completion
        return completion

    def _check_parameters(self, task: luigi.Task) -> None:
        """Values go to the scheduler as strings and come back through parse() (assistant workers,
        re-runs); a value that does not survive that round trip breaks the task later. None is
        luigi's "not set" (FloatParameter(default=None), BoolParameter(default=None), ...): luigi
        accepts it, and so does the check."""
        for name, param in task.get_params():
            value = getattr(task, name)
            if value is None:
                continue
            try:
                param.parse(param.serialize(value))
            except Exception as exc:
                self.problems.append(Problem(
                    "parameter_error", ERROR, task.task_id,
                    f"parameter {name}={value!r} fails to parse as {type(param).__name__}: "
                    f"{type(exc).__name__}: {exc}", name=str(task)))

    def _requirements(self, task: luigi.Task) -> list[luigi.Task]:
        try:
            deps = task.deps()
        except Exception as exc:
            kind = "parameter_error" if _is_parameter_error(exc) else "requires_error"
            what = ("a parameter of a required task failed to parse" if kind == "parameter_error"
                    else "requires() raised")
            self.problems.append(Problem(kind, ERROR, task.task_id, f"{what}: {type(exc).__name__}: {exc}",
                                         _pipeline_traceback(exc), name=str(task)))
            return []
        tasks = []
        for dep in deps:
            if not isinstance(dep, luigi.Task):
                self.problems.append(Problem("requires_error", ERROR, task.task_id,
                                             f"requires() must return Task objects, got {type(dep).__name__}",
                                             name=str(task)))
            elif not dep.initialized():  # luigi's worker refuses these too
                self.problems.append(Problem("requires_error", ERROR, task.task_id,
                                             f"requires() returned a {type(dep).__name__} that is not initialized "
                                             "(an __init__ that does not call super().__init__?)", name=str(task)))
            else:
                tasks.append(dep)
        return tasks

    def _check_external(self, task: luigi.Task, completion: Completion | None) -> None:
        if completion is None:
            completion = Completion.of(task)
            if completion.error is not None:
                self.problems.append(Problem("complete_error", ERROR, task.task_id,
                                             f"complete() raised: {type(completion.error).__name__}: "
                                             f"{completion.error}", _pipeline_traceback(completion.error),
                                             name=str(task)))
                return
        if not completion.value:
            self.problems.append(Problem("missing_external", ERROR if self.strict else WARNING, task.task_id,
                                         "external task's output is missing now", name=str(task)))


def _find_cycles(nodes: dict[str, Node]) -> tuple[list[Problem], dict[str, int]]:
    def successors(task_id: str) -> list[str]:
        return nodes[task_id].deps if task_id in nodes else []

    problems = []
    membership: dict[str, int] = {}
    for number, component in enumerate(cyclic_components(list(nodes), successors)):
        membership.update(dict.fromkeys(component, number))
        path = cycle_path(component, successors)
        names = _path_names(nodes, path)
        problems.append(Problem("cycle", ERROR, path[0], "dependency cycle: " + " -> ".join(names),
                                path=tuple(path), name=names[0], path_names=tuple(names)))
    return sorted(problems, key=lambda p: p.task_id), membership


def _path_names(nodes: dict[str, Node], path: list[str]) -> list[str]:
    """Each task as luigi prints it; its id added only where two tasks of the path print alike
    (a class with its own __repr__, or two modules' classes of one family)."""
    printed = {task_id: str(nodes[task_id].task) if task_id in nodes and nodes[task_id].task is not None
               else task_id for task_id in path}
    alike = Counter(printed[task_id] for task_id in set(path))
    return [printed[t] if alike[printed[t]] == 1 else f"{printed[t]} [{t}]" for t in path]


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


def check_task(root: luigi.Task, strict: bool = False, as_worker: bool = False) -> DagReport:
    """Walk ``root``'s dependencies and return the report (nothing is run). ``as_worker``: walk
    as luigi's worker does, asking each task's ``complete()`` and not walking below complete
    tasks (see the module's docstring); the report's ``answers`` then hold what was asked."""
    walker = _Walker(strict, as_worker)
    with _task_params_cached(), survivors_frozen():
        walker.walk(root)
    cycles, membership = _find_cycles(walker.nodes)
    report = DagReport(root.task_id, walker.nodes, cycles + walker.problems, component=membership,
                       answers=walker.answers)
    if not as_worker or not report.ok:  # run's preflight prints the summary only with problems
        report.depth, report.widest, report.widest_level = _levels(report)
    return report


def as_dict(report: DagReport) -> dict[str, Any]:
    return {
        "root": report.root_id,
        "ok": report.ok,
        "summary": {"tasks": len(report.nodes), "depth": report.depth, "widest_level": report.widest_level,
                    "widest_level_tasks": report.widest, "errors": len(report.errors),
                    "warnings": len(report.warnings)},
        "problems": [{"kind": p.kind, "severity": p.severity, "task_id": p.task_id, "name": p.subject,
                      "message": p.message,
                      **({"path": list(p.path), "path_names": list(p.path_names)} if p.path else {}),
                      **({"traceback": p.detail} if p.detail else {})}
                     for p in report.problems],
        "tasks": {n.task_id: {"family": n.family, "external": n.external, "deps": n.deps,
                              **({"complete": n.complete} if n.complete is not None else {})}
                  for n in report.nodes.values()},
    }
