"""Dependency-graph preflight: catch cycles and broken graphs that stock Luigi leaves NOT_RUN.

For a test suite::

    from luigi_appliance.dag import assert_dag_ok
    assert_dag_ok(MyPipeline(date=...))          # raises AssertionError with the report

or in CI: ``luigi-appliance dag check --module my.pipelines MyPipeline --date 2026-01-01``.
"""

from luigi_appliance.dag.check import DagReport, Problem, check_task
from luigi_appliance.dag.testing import assert_dag_ok

__all__ = ["DagReport", "Problem", "assert_dag_ok", "check_task"]
