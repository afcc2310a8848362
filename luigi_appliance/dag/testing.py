"""``assert_dag_ok`` for a pipeline's own test suite."""

from __future__ import annotations

import luigi

from luigi_appliance.dag.check import DagReport, check_task
from luigi_appliance.dag.render import render_problems


def assert_dag_ok(root: luigi.Task, strict: bool = False) -> DagReport:
    """For test suites: raise AssertionError listing every problem of ``root``'s graph."""
    report = check_task(root, strict)
    if not report.ok:
        raise AssertionError(render_problems(report))
    return report
