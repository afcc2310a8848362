"""``luigi-appliance dag check``, and the same preflight for ``luigi-appliance run``."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

import luigi
import luigi.interface
from luigi.cmdline_parser import CmdlineParser

from luigi_appliance.dag.check import ERROR, DagReport, Problem, check_task
from luigi_appliance.dag.render import RENDERERS, render_problems, render_summary
from luigi_appliance.luigi_internals.worker import TaskAnswers, root_task_class

EXIT_CLEAN = 0
EXIT_PROBLEMS = 1


class RootUnavailable(Exception):
    """The root task's own parameters did not parse: reported as a problem, not a crash."""

    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def _root_task(parser: CmdlineParser) -> luigi.Task:
    """The task named on ``parser``'s command line, as luigi's own parser builds it."""
    task_cls = root_task_class(parser)
    try:
        return parser.get_task_obj()
    except (luigi.parameter.ParameterException, ValueError, TypeError) as exc:
        problem = Problem("parameter_error", ERROR, task_cls.get_task_family(),
                          f"parameters of the root task failed to parse: {type(exc).__name__}: {exc}")
        raise RootUnavailable(problem) from exc


def root_task(luigi_args: list[str]) -> luigi.Task:
    """The task named on the command line, as luigi's own parser builds it."""
    with CmdlineParser.global_instance(luigi_args) as parser:
        return _root_task(parser)


def _checked(luigi_args: list[str], strict: bool, as_worker: bool) -> DagReport:
    """The command line's root task checked while luigi's parser for that command line is in
    place, as in luigi's own run: ``--Task-param`` options reach the tasks requires() builds."""
    with CmdlineParser.global_instance(luigi_args) as parser:
        root = _root_task(parser)
        if as_worker:
            # luigi's logging, as its run sets it up before its worker calls complete() and
            # requires(): the pipeline's own log lines from those calls appear as they would.
            luigi.interface.InterfaceLogging.setup(luigi.interface.core())
        return check_task(root, strict=strict, as_worker=as_worker)


def dag_check(luigi_args: list[str], fmt: str = "text", strict: bool = False, out: TextIO = sys.stdout) -> int:
    """Exit status: 0 clean, 1 problems (warnings too when strict)."""
    started = time.perf_counter()
    try:
        report = _checked(luigi_args, strict, as_worker=False)
    except RootUnavailable as exc:
        print(f"{exc.problem.severity.upper()}: {exc.problem.kind}: {exc.problem.task_id}: {exc.problem.message}",
              file=out)
        return EXIT_PROBLEMS
    out.write(RENDERERS[fmt](report))
    if fmt == "text":
        out.write(f"checked in {time.perf_counter() - started:.2f}s\n")
    return EXIT_CLEAN if report.ok else EXIT_PROBLEMS


@dataclass(frozen=True)
class Preflight:
    """The preflight's outcome for ``run``: its report, and the root's task id with the walk's
    complete()/deps() answers for luigi's worker (None: the root's parameters did not parse)."""

    report: DagReport | None
    root_id: str | None = None
    answers: TaskAnswers | None = None

    @property
    def ok(self) -> bool:
        return self.report is None or self.report.ok


def preflight(luigi_args: list[str], out: TextIO = sys.stderr) -> Preflight:
    """For ``run``: the graph walked as luigi's worker will walk it (nothing below a complete
    task); problems are printed to ``out``."""
    try:
        report = _checked(luigi_args, strict=False, as_worker=True)
    except RootUnavailable:
        return Preflight(None)  # luigi's own run reports bad parameters as it always has
    if not report.ok:
        print("luigi-appliance: the dependency preflight found problems; nothing was scheduled "
              "(--no-dag-check skips this check):", file=out)
        print(render_summary(report), file=out)
        print(render_problems(report), file=out)
    return Preflight(report, report.root_id, report.answers)
