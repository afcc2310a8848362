"""The operator CLI (task, worker list, scheduler, user unlock) against a real ``serve --dev``
scheduler: tasks added with luigi's add_task RPC, the commands run as the console script, the
scheduler's state and audit trail read back over the API and from the audit file.

One scheduler for the module (each test acts on tasks of its own families): starting one costs
more than every command here together.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Server, cli, client_conf, free_port

PASSWORD = "operator-cli-password"


def add_accounts(server: Server, **roles: str) -> None:
    """Local accounts (``user add``), then a reload, waited for in the log (not by logging in:
    failed attempts would count towards a lockout)."""
    for name, role in roles.items():
        result = cli("user", "--users-file", str(server.state_dir / "users"), "add", name, "--role", role,
                     input=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
    server.send(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "Reloaded" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


def credentials(tmp_path: Path, user: str, password: str = PASSWORD) -> Path:
    path = tmp_path / f"{user}.credentials"
    path.write_text(f"{user}:{password}\n")
    path.chmod(0o600)
    return path


def operator_cli(tmp_path: Path, server: Server, user: str, *args: str, password: str | None = None):
    """``luigi-appliance ARGS`` as ``user`` (the dev admin's own password when user is admin)."""
    secret = password or (server.admin_password if user == "admin" else PASSWORD)
    return cli(*args, "--client-config", str(client_conf(tmp_path, server)),
               "--credentials-file", str(credentials(tmp_path, user, secret)))


def add_task(server: Server, task_id: str, family: str, status: str, **extra: object) -> None:
    resp = server.rpc("add_task", worker="w-cli", task_id=task_id, family=family, status=status, **extra)
    assert resp.status_code == 200, resp.text


def status_of(server: Server, task_id: str) -> str:
    graph = server.rpc("dep_graph", task_id=task_id).json()["response"]
    return graph[task_id]["status"]


def audit(server: Server, event: str, count: int, principal: str | None = None) -> list[dict]:
    """The audit trail's ``event`` lines (of ``principal``), once the writer has flushed at least
    ``count`` of them (it writes every 0.2 s)."""
    path = server.state_dir / "audit.log"
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        found = [x for x in lines if x["event"] == event and principal in (None, x["principal"])]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def refused_line(result, user: str, method: str) -> None:
    """Exit 1 and one line naming the account and the method, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"scheduler refused {method} for user {user!r}" in lines[0] and "403 permission denied" in lines[0]


def add_disabled(server: Server, task_id: str, family: str) -> None:
    """A task the scheduler disabled: failed once with retry_count 1 (one luigi creates as
    FAILED is never disabled, hence PENDING first)."""
    for status in ("PENDING", "FAILED"):
        add_task(server, task_id, family, status, retry_policy_dict={"retry_count": 1})


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``serve --dev`` (as conftest's dev_server) with a viewer, an operator, and for the
    listings a failed task with a done dependency, a disabled one, a pending one, and one whose
    id contains another family's name."""
    root = tmp_path_factory.mktemp("operator-cli")
    port = free_port()
    server = Server(["serve", "--dev", "--state-dir", str(root / "var"), "--port", str(port)],
                    root / "var", port, root / "server.log")
    server.start()
    add_accounts(server, vera="viewer", otto="operator", lou="viewer")
    add_task(server, "Leaf_1_aaaaaaaaaa", "Leaf", "DONE", params={"n": "1"})
    add_task(server, "Report_1_bbbbbbbbbb", "Report", "FAILED", params={"day": "1"},
             deps=["Leaf_1_aaaaaaaaaa"], expl="ValueError: boom in Report")
    add_disabled(server, "Flaky_1_cccccccccc", "Flaky")
    add_task(server, "LeafCount_1_eeeeeeeeee", "LeafCount", "PENDING")
    yield server
    server.stop()


def test_task_list_filters_and_json(populated: Server, tmp_path: Path) -> None:
    result = operator_cli(tmp_path, populated, "vera", "task", "list")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["STATUS", "FAMILY", "LAST", "UPDATED", "TASK", "ID"]
    # Aligned: every row's task id starts where the header's TASK ID does.
    column = header.index("TASK ID")
    assert {"Leaf_1_aaaaaaaaaa", "Report_1_bbbbbbbbbb", "Flaky_1_cccccccccc",
            "LeafCount_1_eeeeeeeeee"} <= {row[column:] for row in rows}
    assert all(" " not in row[column:] and row[column - 1] == " " for row in rows)
    assert any(row.startswith("DISABLED") and row.endswith("Flaky_1_cccccccccc") for row in rows)

    failed = json.loads(operator_cli(tmp_path, populated, "vera", "task", "list", "--status", "failed",
                                     "--json").stdout)
    assert "Report_1_bbbbbbbbbb" in [t["task_id"] for t in failed["tasks"]]
    assert {t["status"] for t in failed["tasks"]} == {"FAILED"}  # filtered by the scheduler
    failed["tasks"] = [t for t in failed["tasks"] if t["task_id"] == "Report_1_bbbbbbbbbb"]
    assert set(failed["tasks"][0]) == {"task_id", "family", "status", "display_name", "params", "priority",
                                       "workers", "worker_running", "start_time", "last_updated",
                                       "status_message", "progress_percentage"}
    assert failed["tasks"][0]["params"] == {"day": "1"} and failed["tasks"][0]["status"] == "FAILED"

    # luigi's search finds LeafCount too; the family is matched exactly.
    leaf = json.loads(operator_cli(tmp_path, populated, "vera", "task", "list", "--family", "Leaf", "--json").stdout)
    assert [t["task_id"] for t in leaf["tasks"]] == ["Leaf_1_aaaaaaaaaa"]


def test_task_show_has_status_deps_error_and_history(populated: Server, tmp_path: Path) -> None:
    shown = operator_cli(tmp_path, populated, "vera", "task", "show", "Report_1_bbbbbbbbbb", "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["task"]["status"] == "FAILED" and detail["task"]["family"] == "Report"
    assert detail["deps"] == [{"task_id": "Leaf_1_aaaaaaaaaa", "family": "Leaf", "status": "DONE"}]
    assert detail["error"] == "ValueError: boom in Report"
    # The history (serve --dev records it in SQLite), written by the scheduler's writer thread.
    assert [(e["event"], e["principal"]) for e in detail["history"]][-1:] == [("FAILED", "admin")]

    text = operator_cli(tmp_path, populated, "vera", "task", "show", "Report_1_bbbbbbbbbb")
    assert text.returncode == 0
    assert "status        FAILED" in text.stdout and "ValueError: boom in Report" in text.stdout
    unknown = operator_cli(tmp_path, populated, "vera", "task", "show", "Nope_1_ffffffffff")
    assert unknown.returncode == 1 and "not known to the scheduler" in unknown.stderr


def test_viewer_is_refused_what_the_operator_then_does(populated: Server, tmp_path: Path) -> None:
    add_task(populated, "Broken_1_aaaaaaaaaa", "Broken", "FAILED")
    add_disabled(populated, "Stuck_1_bbbbbbbbbb", "Stuck")
    add_task(populated, "Wait_1_dddddddddd", "Wait", "PENDING")
    for args, method in [(("task", "forgive", "Broken_1_aaaaaaaaaa"), "forgive_failures"),
                         (("task", "re-enable", "Stuck_1_bbbbbbbbbb"), "re_enable_task"),
                         (("task", "mark-done", "Broken_1_aaaaaaaaaa"), "mark_as_done"),
                         (("scheduler", "pause"), "pause")]:
        refused_line(operator_cli(tmp_path, populated, "vera", *args), "vera", method)
    assert status_of(populated, "Broken_1_aaaaaaaaaa") == "FAILED"
    assert status_of(populated, "Stuck_1_bbbbbbbbbb") == "DISABLED"
    assert populated.rpc("is_paused").json()["response"] == {"paused": False}
    refusals = [(line["method"], line["outcome"]) for line in audit(populated, "rpc", 4, "vera")]
    assert refusals == [("forgive_failures", "refused:403"), ("re_enable_task", "refused:403"),
                        ("mark_as_done", "refused:403"), ("pause", "refused:403")]

    forgive = operator_cli(tmp_path, populated, "otto", "task", "forgive", "Broken_1_aaaaaaaaaa", "Nope_1_ffffffffff")
    assert forgive.returncode == 1  # one of the two is unknown
    assert "not known to the scheduler" in forgive.stdout
    assert status_of(populated, "Broken_1_aaaaaaaaaa") == "PENDING"

    assert operator_cli(tmp_path, populated, "otto", "task", "re-enable", "Stuck_1_bbbbbbbbbb").returncode == 0
    assert status_of(populated, "Stuck_1_bbbbbbbbbb") == "FAILED"  # luigi re-enables to FAILED
    done = operator_cli(tmp_path, populated, "otto", "task", "mark-done", "Stuck_1_bbbbbbbbbb", "Wait_1_dddddddddd")
    assert done.returncode == 0, done.stderr
    assert status_of(populated, "Stuck_1_bbbbbbbbbb") == "DONE"
    assert status_of(populated, "Wait_1_dddddddddd") == "PENDING"  # luigi marks no PENDING task done
    assert "unchanged: only RUNNING, FAILED or DISABLED tasks are marked done" in done.stdout

    assert operator_cli(tmp_path, populated, "otto", "scheduler", "pause").stdout.startswith("scheduler: paused")
    assert populated.rpc("is_paused").json()["response"] == {"paused": True}
    state = json.loads(operator_cli(tmp_path, populated, "vera", "scheduler", "status", "--json").stdout)
    assert state == {"paused": True, "pause_enabled": True}
    assert operator_cli(tmp_path, populated, "otto", "scheduler", "unpause").stdout.strip() == "scheduler: running"
    assert populated.rpc("is_paused").json()["response"] == {"paused": False}

    workers = json.loads(operator_cli(tmp_path, populated, "vera", "worker", "list", "--json").stdout)["workers"]
    assert "w-cli" in [w["worker"] for w in workers]
    human = operator_cli(tmp_path, populated, "vera", "worker", "list").stdout.splitlines()
    assert human[0].split()[:3] == ["STATE", "RUNNING", "PENDING"] and any(r.endswith("w-cli") for r in human[1:])

    done_by_otto = [(line["method"], line.get("task_id"), line["outcome"])
                    for line in audit(populated, "rpc", 7, "otto")]
    assert done_by_otto == [("forgive_failures", "Broken_1_aaaaaaaaaa", "ok"),
                            ("forgive_failures", "Nope_1_ffffffffff", "ok"),
                            ("re_enable_task", "Stuck_1_bbbbbbbbbb", "ok"),
                            ("mark_as_done", "Stuck_1_bbbbbbbbbb", "ok"),
                            ("mark_as_done", "Wait_1_dddddddddd", "ok"),
                            ("pause", None, "ok"), ("unpause", None, "ok")]


@pytest.mark.doc_rule("user-unlock")
def test_user_unlock_lets_a_locked_out_user_log_in_without_a_restart(populated: Server, tmp_path: Path) -> None:
    dev_server = populated
    pid = dev_server.proc.pid if dev_server.proc else None
    # Logged in once before the lockout: their verified credentials are cached, so the locked
    # address (127.0.0.1, like the name) does not stop them.
    for user in ("admin", "otto"):
        assert operator_cli(tmp_path, dev_server, user, "scheduler", "status").returncode == 0
    lou, wrong = dev_server.session("lou", PASSWORD), dev_server.session("lou", "not-the-password")
    for _ in range(5):  # [auth] failure_limit
        assert dev_server.rpc("is_paused", session=wrong).status_code == 401
    assert dev_server.rpc("is_paused", session=lou).status_code == 429

    refused_line(operator_cli(tmp_path, dev_server, "otto", "user", "unlock", "lou"), "otto", "unlock")
    assert dev_server.rpc("is_paused", session=lou).status_code == 429

    unlocked = operator_cli(tmp_path, dev_server, "admin", "user", "unlock", "LOU")  # any spelling
    assert unlocked.returncode == 0, unlocked.stderr
    assert unlocked.stdout.strip() == "unlocked LOU (and the address(es) 127.0.0.1)"
    assert dev_server.rpc("is_paused", session=lou).status_code == 200
    assert dev_server.proc is not None and dev_server.proc.pid == pid and dev_server.proc.poll() is None
    again = operator_cli(tmp_path, dev_server, "admin", "user", "unlock", "lou")
    assert again.stdout.strip() == "lou was not locked out"

    lines = [(x["principal"], x["outcome"], x.get("user"), x.get("addresses"))
             for x in audit(dev_server, "user_unlock", 3)]
    assert lines == [("otto", "refused:403", "lou", None), ("admin", "ok", "LOU", ["127.0.0.1"]),
                     ("admin", "not_locked", "lou", [])]


def test_unlock_route_refuses_a_malformed_body(populated: Server) -> None:
    dev_server = populated
    for body in [b"", b"[]", b'{"user": 7}', b'{"user": ""}', b'{"user": " lou"}']:
        resp = dev_server.session().post(f"{dev_server.url}/appliance/users/unlock", data=body, timeout=10)
        assert resp.status_code == 400 and resp.json()["error"] == 400, body
    assert dev_server.session().get(f"{dev_server.url}/appliance/users/unlock", timeout=10).status_code == 405
    anonymous = dev_server.session()
    anonymous.auth = None
    assert anonymous.post(f"{dev_server.url}/appliance/users/unlock", data=b'{"user": "lou"}',
                          timeout=10).status_code == 401
