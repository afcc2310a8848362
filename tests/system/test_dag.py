"""dag check on real Luigi task modules, the run preflight, and the scheduler's own detection."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, PIPELINES, Server, cli, client_conf
from luigi_appliance.dag import assert_dag_ok, check_task

sys.path.insert(0, str(PIPELINES))
import dag_cases

ENV = {"PYTHONPATH": str(PIPELINES)}


def dag(*args: str):
    return cli("dag", "check", "--module", "dag_cases", *args, env=ENV)


def tid(task) -> str:
    return task.task_id


def test_self_cycle() -> None:
    result = dag("SelfCycle")
    assert result.returncode == 1
    # Tasks as luigi prints them (str(task)); the JSON format has the task ids.
    assert "ERROR: cycle: SelfCycle(): dependency cycle: SelfCycle() -> SelfCycle()" in result.stdout


def test_two_cycle_exact_path() -> None:
    a, b = tid(dag_cases.PingA()), tid(dag_cases.PingB())
    result = dag("PingA", "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    cycles = [p for p in report["problems"] if p["kind"] == "cycle"]
    assert [c["path"] for c in cycles] == [[a, b, a]]
    assert [c["path_names"] for c in cycles] == [["PingA()", "PingB()", "PingA()"]]
    assert report["summary"]["tasks"] == 3


def test_long_cycle_through_fifty_tasks() -> None:
    report = check_task(dag_cases.Ring(size=50))
    [cycle] = report.cycles
    assert cycle.path == tuple(tid(dag_cases.Ring(position=i % 50, size=50)) for i in range(51))


def test_cycle_behind_a_parameterised_task_only_for_that_parameter() -> None:
    eu = dag("Region", "--region", "eu")
    stages = [f"Stage(region=eu, stage={s})" for s in (1, 2, 3, 1)]
    assert eu.returncode == 1 and "dependency cycle: " + " -> ".join(stages) in eu.stdout
    us = dag("Region", "--region", "us")
    assert us.returncode == 0, us.stdout
    assert "6 tasks, depth 6" in us.stdout


def test_diamond_is_clean_and_drawn_once() -> None:
    result = dag("Diamond")
    assert result.returncode == 0
    assert result.stdout.startswith("4 tasks, depth 3, widest level 1 with 2 tasks; 0 error(s), 0 warning(s)")
    assert "- DiamondBottom()  (see above)" in result.stdout
    dot = dag("Diamond", "--format", "dot")
    assert dot.returncode == 0 and dot.stdout.startswith("digraph pipeline {") and "color=red" not in dot.stdout
    assert dot.stdout.count(" -> ") == 4


def test_requires_that_raises_and_bad_parameters() -> None:
    result = dag("Broken")
    assert result.returncode == 1
    assert "ERROR: requires_error: Exploding(): requires() raised: KeyError" in result.stdout
    # The traceback points into the pipeline's own code.
    assert f'File "{PIPELINES / "dag_cases.py"}"' in result.stdout and "missing-key-in-pipeline-code" in result.stdout
    assert "parameter count='not-a-number' fails to parse as IntParameter" in result.stdout
    root_params = dag("Counted", "--count", "eleven")
    assert root_params.returncode == 1 and "parameter_error: Counted: parameters of the root task" in root_params.stdout


def test_missing_external_is_a_warning_or_with_strict_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "not-there")
    lenient = dag("NeedsUpstream", "--path", missing)
    assert lenient.returncode == 0 and "WARNING: missing_external" in lenient.stdout
    strict = dag("NeedsUpstream", "--path", missing, "--strict")
    assert strict.returncode == 1 and "ERROR: missing_external" in strict.stdout
    Path(missing).touch()
    assert dag("NeedsUpstream", "--path", missing, "--strict").returncode == 0


def test_duplicate_task_id_with_different_classes() -> None:
    import luigi

    # Another module's class of the same name: luigi gives both the same task ids.
    Leaf = type("Leaf", (luigi.Task,), {"name": luigi.Parameter(default="leaf"), "__module__": "other_pipeline"})
    assert Leaf().task_id == dag_cases.Leaf().task_id

    class Both(luigi.WrapperTask):
        def requires(self):
            return [dag_cases.Leaf(), Leaf()]

    report = check_task(Both())
    assert [p.kind for p in report.errors] == ["duplicate_id"]
    assert "claimed by two classes" in report.errors[0].message


def test_none_defaults_pass_and_dag_check_walks_below_complete_tasks(tmp_path: Path) -> None:
    def walk_cases(*args: str):
        return cli("dag", "check", "--module", "worker_walk_cases", *args, "--root", str(tmp_path), env=ENV)

    # FloatParameter(default=None), BoolParameter(default=None), ...: luigi accepts them.
    optionals = walk_cases("Optionals")
    assert optionals.returncode == 0, optionals.stdout
    # dag check shows the whole static graph: below a complete task too (run's preflight does not
    # walk there, as luigi's worker does not; tests/system/test_run_like_luigi.py).
    (tmp_path / "cleaned").write_text("cleaned earlier\n")
    static = walk_cases("Report")
    assert static.returncode == 1
    assert f"ERROR: requires_error: Cleaned(root={tmp_path}): requires() raised: FileNotFoundError" in static.stdout


def test_usage_errors_exit_2() -> None:
    assert dag("NoSuchTask").returncode == 2
    assert cli("dag", "check", "--module", "no_such_module_xyz", "T").returncode == 2
    assert cli("dag", "check", "Diamond", env=ENV).returncode == 2


def test_pytest_helper() -> None:
    assert assert_dag_ok(dag_cases.Diamond()).ok
    with pytest.raises(AssertionError, match="dependency cycle"):
        assert_dag_ok(dag_cases.Ring(size=7))


# Runs the CLI as its only child and reports that child's peak RSS (KiB) on stderr.
_MEASURE = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr[-2000:] + '\\nmaxrss=%d' % "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")


def measure_big(n: int) -> tuple[dict, float, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(BIN), "dag", "check", "--module", "dag_cases", "Big",
                           "--n", str(n), "--format", "json"],
                          capture_output=True, text=True, env={**ENV, "PATH": "/usr/bin:/bin"}, timeout=600)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    peak_mib = int(proc.stderr.rsplit("maxrss=", 1)[1]) / 1024
    return json.loads(proc.stdout)["summary"], elapsed, peak_mib


def test_hundred_thousand_tasks_time_and_memory_printed(capsys) -> None:
    rows = []
    for n in (25_000, 100_000):
        summary, elapsed, peak_mib = measure_big(n)
        assert summary["tasks"] == n and summary["errors"] == 0
        rows.append(f"[dag check] {n:>6} tasks, depth {summary['depth']}: {elapsed:5.1f}s wall "
                    f"(process start included), peak RSS {peak_mib:.0f} MiB")
    with capsys.disabled():
        print("\n" + "\n".join(rows))


# ---- the same graphs submitted by real workers -------------------------------------------------

def run_worker(tmp_path: Path, server: Server, *args: str):
    return cli("run", "--client-config", str(client_conf(tmp_path, server)),
               "--credentials-file", str(server.state_dir / "admin-credentials"), *args, env=ENV, cwd=tmp_path)


def test_run_preflight_fails_at_once_with_the_cycle(dev_server: Server, tmp_path: Path) -> None:
    result = run_worker(tmp_path, dev_server, "--module", "dag_cases", "PingA")
    assert result.returncode == 4
    assert "ERROR: cycle: PingA(): dependency cycle: PingA() -> PingB() -> PingA()" in result.stderr
    # Nothing reached the scheduler.
    assert dev_server.rpc("task_list", status="", upstream_status="").json()["response"] == {}


@pytest.mark.parametrize("task", [["SelfCycle"], ["PingA"], ["Ring", "--size", "4"], ["Region", "--region", "eu"]])
def test_scheduler_fails_cycles_submitted_by_real_workers(dev_server: Server, tmp_path: Path, task: list[str]) -> None:
    started = time.monotonic()
    result = run_worker(tmp_path, dev_server, "--no-dag-check", "--module", "dag_cases", *task)
    assert result.returncode != 0
    assert time.monotonic() - started < 60
    failed = dev_server.rpc("task_list", status="FAILED", upstream_status="").json()["response"]
    assert failed, dev_server.log()
    for task_id in failed:
        message = dev_server.rpc("get_task_status_message", task_id=task_id).json()["response"]["statusMessage"]
        assert message.startswith("dependency cycle: ") and task_id in message
        error = dev_server.rpc("fetch_error", task_id=task_id).json()["response"]["error"]
        assert error == message
    assert "Failing" in dev_server.log() and "dependency cycle" in dev_server.log()


def test_scheduler_leaves_shared_dependencies_alone(dev_server: Server, tmp_path: Path) -> None:
    # diamond_pipeline: 12 tasks with shared dependencies and no cycle; the scheduler-side check
    # alone (no preflight) must not fail any of them.
    result = run_worker(tmp_path, dev_server, "--no-dag-check", "--module", "diamond_pipeline", "Report",
                        "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert dev_server.rpc("task_list", status="FAILED", upstream_status="").json()["response"] == {}
    assert len(dev_server.rpc("task_list", status="DONE", upstream_status="").json()["response"]) == 12
