"""``luigi-appliance dag check``, and the same preflight for ``luigi-appliance run``."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import luigi
from luigi.cmdline_parser import CmdlineParser

from luigi_appliance.dag.check import ERROR, DagReport, Problem, check_task
from luigi_appliance.dag.render import RENDERERS, render_problems, render_summary
from luigi_appliance.luigi_internals.worker import root_task_class

EXIT_CLEAN = 0
EXIT_PROBLEMS = 1


class RootUnavailable(Exception):
    """The root task's own parameters did not parse: reported as a problem, not a crash."""

    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def root_task(luigi_args: list[str]) -> luigi.Task:
    """The task named on the command line, as luigi's own parser builds it."""
    with CmdlineParser.global_instance(luigi_args) as parser:
        task_cls = root_task_class(parser)
        try:
            return parser.get_task_obj()
        except (luigi.parameter.ParameterException, ValueError, TypeError) as exc:
            problem = Problem("parameter_error", ERROR, task_cls.get_task_family(),
                              f"parameters of the root task failed to parse: {type(exc).__name__}: {exc}")
            raise RootUnavailable(problem) from exc


def dag_check(luigi_args: list[str], fmt: str = "text", strict: bool = False, out: TextIO = sys.stdout) -> int:
    """Exit status: 0 clean, 1 problems (warnings too when strict)."""
    try:
        root = root_task(luigi_args)
    except RootUnavailable as exc:
        print(f"{exc.problem.severity.upper()}: {exc.problem.kind}: {exc.problem.task_id}: {exc.problem.message}",
              file=out)
        return EXIT_PROBLEMS
    started = time.perf_counter()
    report = check_task(root, strict=strict)
    out.write(RENDERERS[fmt](report))
    if fmt == "text":
        out.write(f"checked in {time.perf_counter() - started:.2f}s\n")
    return EXIT_CLEAN if report.ok else EXIT_PROBLEMS


def preflight(luigi_args: list[str], out: TextIO = sys.stderr) -> DagReport | None:
    """For ``run``: the report when the graph has errors (printed to ``out``), else None."""
    try:
        root = root_task(luigi_args)
    except RootUnavailable:
        return None  # luigi's own run reports bad parameters as it always has
    report = check_task(root)
    if report.ok:
        return None
    print("luigi-appliance: the dependency preflight found problems; nothing was scheduled "
          "(--no-dag-check skips this check):", file=out)
    print(render_summary(report), file=out)
    print(render_problems(report), file=out)
    return report
