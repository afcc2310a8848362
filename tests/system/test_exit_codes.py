"""``luigi-appliance run`` exits as README.md's table says, one real run per class, and the
command line reaches luigi as written: no abbreviations taken for ours, --config on either side
of the command, paths relative to the working directory.

0 completed; 1 a task failed, or a usage/config error before anything ran; 2 command-line usage;
3 not complete for another reason (external data missing, scheduler refused the credentials:
test_operational_errors.py); 4 the dependency preflight found a cycle.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PIPELINES, Server, cli, free_port

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_COMPLETE, EXIT_PREFLIGHT = 0, 1, 2, 3, 4


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("exit-codes")
    port = free_port()
    server = Server(["serve", "--dev", "--state-dir", str(tmp / "var"), "--port", str(port)],
                    tmp / "var", port, tmp / "server.log")
    server.start()
    yield server
    server.stop()


def run(scheduler: Server, tmp_path: Path, *args: str, conf_text: str = "") -> subprocess.CompletedProcess:
    conf = tmp_path / "client.conf"
    conf.write_text(f"[client]\nscheduler_url = {scheduler.url}/\nca_file = {scheduler.ca_file}\n"
                    f"retry_attempts = 1\nretry_wait = 0\n{conf_text}")
    path = os.pathsep.join(p for p in (str(PIPELINES), os.environ.get("PYTHONPATH", "")) if p)
    return cli("run", "--client-config", str(conf), "--credentials-file",
               str(scheduler.state_dir / "admin-credentials"), *args, env={"PYTHONPATH": path}, cwd=tmp_path)


def test_completed_exits_0_and_a_parameter_named_like_a_prefix_of_ours_reaches_the_task(
        scheduler: Server, tmp_path: Path) -> None:
    # --n is a prefix of --no-dag-check: with argparse's abbreviations it was taken for it.
    result = run(scheduler, tmp_path, "--module", "exit_cases", "Echo", "--n", "5", "--out-dir", str(tmp_path))
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    assert (tmp_path / "echo-5.txt").read_text() == "5\n"
    # And a prefix of --scheduler-url, --ca-file or --credentials-file is luigi's too (here: unknown).
    result = run(scheduler, tmp_path, "--module", "exit_cases", "Echo", "--n", "6", "--out-dir", str(tmp_path),
                 "--s", "x")
    assert result.returncode == EXIT_USAGE and "[client] scheduler_url" not in result.stderr, result.stderr


def test_a_failed_task_exits_1(scheduler: Server, tmp_path: Path) -> None:
    result = run(scheduler, tmp_path, "--module", "exit_cases", "Fails", "--out-dir", str(tmp_path))
    assert result.returncode == EXIT_FAILED, result.stderr[-3000:]
    assert "this task always fails" in result.stderr


def test_a_config_error_before_anything_ran_exits_1(scheduler: Server, tmp_path: Path) -> None:
    result = run(scheduler, tmp_path, "--module", "exit_cases", "Echo", "--n", "1", "--out-dir", str(tmp_path),
                 conf_text="retry_atempts = 2\n")
    assert result.returncode == EXIT_FAILED, result.stderr[-3000:]
    assert "retry_atempts" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "echo-1.txt").exists()


@pytest.mark.parametrize(("args", "says"), [
    (["Echo", "--n", "1"], "run needs --module"),
    (["--module", "exit_cases", "NoSuchTask"], "No task NoSuchTask"),
    (["--module", "exit_cases", "Echo", "--n", "one", "--out-dir", "/tmp"], "invalid literal for int()"),
    (["--module", "exit_cases", "Echo", "--out-dir", "/tmp"], "requires the 'n' parameter"),
    (["--local-scheduler", "--module", "exit_cases", "Echo", "--n", "1", "--out-dir", "/tmp"], "--local-scheduler"),
], ids=["no-module", "unknown-task", "bad-value", "missing-parameter", "local-scheduler"])
def test_command_line_usage_errors_exit_2_in_one_line(scheduler: Server, tmp_path: Path, args: list[str],
                                                      says: str) -> None:
    result = run(scheduler, tmp_path, *args)
    assert result.returncode == EXIT_USAGE, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0], result.stderr


def test_missing_external_data_exits_3(scheduler: Server, tmp_path: Path) -> None:
    result = run(scheduler, tmp_path, "--module", "exit_cases", "NeedsMissing", "--out-dir", str(tmp_path))
    assert result.returncode == EXIT_NOT_COMPLETE, result.stderr[-3000:]
    assert not (tmp_path / "needs-missing.txt").exists()


def test_a_cycle_found_by_the_preflight_exits_4(scheduler: Server, tmp_path: Path) -> None:
    result = run(scheduler, tmp_path, "--module", "dag_cases", "PingA")
    assert result.returncode == EXIT_PREFLIGHT, result.stderr[-3000:]
    assert "nothing was scheduled" in result.stderr


def test_config_before_or_after_the_command(configured_server, tmp_path: Path) -> None:
    conf = Path(configured_server(start=False).args[1])
    before = cli("--config", conf.name, "config", "check", cwd=conf.parent)
    after = cli("config", "check", "--config", conf.name, cwd=conf.parent)
    assert before.returncode == 0, before.stderr
    assert after.returncode == 0, after.stderr
    assert before.stdout == after.stdout == f"configuration OK: {conf}\n"
    # A user named like an option's value stays a user: --config takes its value along.
    added = cli("user", "add", "--config", str(conf), "--role", "viewer", "alice", input="alice-password-123\n")
    assert added.returncode == 0, added.stderr
    assert "alice\tviewer" in cli("--config", str(conf), "user", "list").stdout
    twice = cli("--config", str(conf), "config", "check", "--config", str(conf))
    assert twice.returncode == EXIT_USAGE and "--config given both before and after" in twice.stderr
