"""``luigi-appliance approvals list|show|approve|deny`` and a ``luigi-appliance run`` whose task
awaits approval, against a real scheduler with real local accounts.

The rule gates the diamond pipeline's Report (tests/pipelines/diamond_pipeline.py) and needs two
of alice, bob; bot is an agent-kind worker account (``[approvals] agents``). Its run logs the
held task, runs the eleven ungated dependencies, waits, and runs Report once both approved.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, PIPELINES, Server, cli, client_conf

PASSWORD = "approvals-cli-password"
EXIT_AWAITING_APPROVAL = 5
RULES = """
[approvals]
agents = user:bot
[approval.reports]
families = Report
approvals = 2
approvers = user:alice user:bob
"""
# luigi's worker waits wait_interval plus up to wait_jitter between looks: short, for the tests.
LUIGI_CFG = "[worker]\nwait_interval = 0.3\nwait_jitter = 0.2\n"


@pytest.fixture
def server(configured_server, tmp_path: Path) -> Server:
    made = configured_server(RULES, start=False)
    for name, role in (("bot", "worker"), ("alice", "viewer"), ("bob", "viewer"), ("vera", "viewer")):
        result = cli("user", "--users-file", str(tmp_path / "users"), "add", name, "--role", role,
                     input=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
    return made.start()


def credentials(tmp_path: Path, user: str) -> Path:
    path = tmp_path / f"{user}.credentials"
    path.write_text(f"{user}:{PASSWORD}\n")
    path.chmod(0o600)
    return path


def viewer_cli(tmp_path: Path, server: Server, *args: str) -> subprocess.CompletedProcess:
    """``approvals list|show`` with client.conf and vera's stored credentials."""
    return cli("approvals", *args, "--client-config", str(client_conf(tmp_path, server)),
               "--credentials-file", str(credentials(tmp_path, "vera")))


def decide(tmp_path: Path, server: Server, user: str, *args: str, password: str = PASSWORD,
           ) -> subprocess.CompletedProcess:
    """``approvals approve|deny ...`` as ``user``, the password on standard input."""
    return cli("approvals", *args, "--client-config", str(client_conf(tmp_path, server)), "--user", user,
               "--password-stdin", input=password + "\n")


def one_error_line(result: subprocess.CompletedProcess, code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


class Run:
    """``luigi-appliance run`` of the diamond pipeline's Report as bot, in the background."""

    def __init__(self, tmp_path: Path, server: Server, *extra: str):
        self.out = tmp_path / "out"
        self.log_path = tmp_path / "run.log"
        (tmp_path / "luigi.cfg").write_text(LUIGI_CFG)
        env = {**os.environ, "PYTHONPATH": str(PIPELINES), "LUIGI_CONFIG_PATH": str(tmp_path / "luigi.cfg")}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(BIN), "run", "--client-config", str(client_conf(tmp_path, server)),
             "--credentials-file", str(credentials(tmp_path, "bot")), *extra,
             "--module", "diamond_pipeline", "Report", "--out-dir", str(self.out)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.proc.poll() is None, f"run exited {self.proc.returncode} before {text!r}:\n{self.log()}"
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.stop()


def pending_request(tmp_path: Path, server: Server) -> dict:
    listed = viewer_cli(tmp_path, server, "list", "--state", "pending", "--json")
    assert listed.returncode == 0, listed.stderr
    requests_ = json.loads(listed.stdout)["requests"]
    assert len(requests_) == 1, requests_
    return requests_[0]


def test_an_agents_run_waits_and_completes_once_two_approvers_approved(server: Server, tmp_path: Path,
                                                                         runs: list[Run]) -> None:
    run = Run(tmp_path, server)
    runs.append(run)
    run.wait_for("awaits approval")
    request = pending_request(tmp_path, server)
    rid = request["id"]
    line = next(x for x in run.log().splitlines() if "awaits approval" in x)
    assert line.startswith("WARNING: Task Report_") and f"awaits approval ({rid}): requested by bot (agent)" in line
    assert "needs 2 more from user:alice or user:bob (reports)" in line, line
    assert request["family"] == "Report" and request["requester"] == "bot" and request["requester_kind"] == "agent"
    assert request["created"].endswith("+00:00") and request["approvals"] == []

    # The list, human: one row with the id, the state and what is missing; the task id last.
    human = viewer_cli(tmp_path, server, "list")
    assert human.returncode == 0, human.stderr
    header, row = human.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "ACTION"] and row.startswith(f"{rid}  pending  add_task")
    assert "needs 2 more from" in row and row.endswith(request["task_id"])
    shown = viewer_cli(tmp_path, server, "show", rid, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["request"]["id"] == rid and detail["task"]["status"] == "PENDING"
    assert len(detail["task"]["deps"]) == 3
    human_show = viewer_cli(tmp_path, server, "show", rid)
    assert "requested by  bot (agent)" in human_show.stdout and "dependencies: 3" in human_show.stdout

    # The requester may not approve their own request: one line, exit 1.
    own = one_error_line(decide(tmp_path, server, "bot", "approve", rid))
    assert own == f"luigi-appliance: error: scheduler refused approve for user 'bot': 403 bot asked for {rid} " \
                  "and may not approve it"
    # A wrong password: the authentication failure, one line, exit 1, and nothing decided.
    wrong = one_error_line(decide(tmp_path, server, "alice", "approve", rid, password="not-the-password"))
    assert "refused approve for user 'alice': 401 authentication failed" in wrong
    assert "check the name (--user) and the password given on standard input" in wrong
    assert PASSWORD not in wrong and "not-the-password" not in wrong
    # deny needs --comment (argparse's usage error, exit 2).
    assert decide(tmp_path, server, "alice", "deny", rid).returncode == 2

    first = decide(tmp_path, server, "alice", "approve", rid, "--comment", "numbers checked")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"Awaiting approval ({rid}): requested by bot (agent); needs 1 more from " \
                                   "user:alice or user:bob (reports)"
    again = one_error_line(decide(tmp_path, server, "alice", "approve", rid))
    assert "409" in again and "already approved" in again
    time.sleep(1.5)
    assert run.proc.poll() is None, run.log()  # one approval of two: still waiting
    assert not (run.out / "report.txt").exists() and (run.out / "transform-2.txt").exists()

    second = decide(tmp_path, server, "bob", "approve", rid)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"Approved ({rid}) by alice, bob"
    assert run.finish() == 0, run.log()
    assert (run.out / "report.txt").read_text().strip() == str(30 + 50 + 94)
    assert re.search(rf"^INFO: Task Report_\S+: approved \({rid}\)", run.log(), re.M), run.log()
    done = json.loads(viewer_cli(tmp_path, server, "show", rid, "--json").stdout)
    assert done["request"]["state"] == "done" and [a["principal"] for a in done["request"]["approvals"]] == [
        "alice", "bob"]
    assert done["request"]["approvals"][0]["comment"] == "numbers checked"


def test_a_denial_fails_the_waiting_run(server: Server, tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path, server)
    runs.append(run)
    run.wait_for("Waiting for the decision")
    rid = pending_request(tmp_path, server)["id"]
    blank = one_error_line(decide(tmp_path, server, "bob", "deny", rid, "--comment", "  "), code=2)
    assert "deny needs --comment TEXT" in blank
    denied = decide(tmp_path, server, "bob", "deny", rid, "--comment", "not before the audit")
    assert denied.returncode == 0, denied.stderr
    assert denied.stdout.strip() == f"Denied ({rid}): denied by bob: not before the audit"
    assert run.finish() == 1, run.log()
    assert f"will not run: Denied ({rid}): denied by bob: not before the audit" in run.log()
    assert not (run.out / "report.txt").exists()
    assert "Traceback" not in run.log()


def test_no_wait_runs_what_may_run_and_exits_awaiting_approval(server: Server, tmp_path: Path,
                                                                runs: list[Run]) -> None:
    run = Run(tmp_path, server, "--no-wait")
    runs.append(run)
    assert run.finish() == EXIT_AWAITING_APPROVAL, run.log()
    rid = pending_request(tmp_path, server)["id"]
    assert f"awaits approval ({rid})" in run.log() and "Waiting for the decision" not in run.log()
    assert f"1 task(s) await approval; run the same command again once approved ({rid})" in run.log()
    # The ungated dependencies ran; the held task did not.
    assert (run.out / "transform-0.txt").exists() and not (run.out / "report.txt").exists()


def test_unknown_request_and_unreachable_scheduler_are_one_line(server: Server, tmp_path: Path) -> None:
    unknown = one_error_line(viewer_cli(tmp_path, server, "show", "apr-000000000000"))
    assert "404" in unknown and "apr-000000000000" in unknown
    missing = one_error_line(decide(tmp_path, server, "alice", "approve", "apr-000000000000"))
    assert "404" in missing
    gone = cli("approvals", "approve", "apr-1", "--client-config", str(client_conf(tmp_path, server)),
               "--scheduler-url", "https://127.0.0.1:1/", "--user", "alice", "--password-stdin", input="x\n")
    assert "cannot reach the scheduler at https://127.0.0.1:1/: connection refused" in one_error_line(gone)
    glass = one_error_line(decide(tmp_path, server, "alice", "approve", "apr-1", "--break-glass"), code=2)
    assert "--break-glass needs --reason" in glass
