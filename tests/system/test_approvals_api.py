"""The approval RPCs (server/approvals_api.py) against a real scheduler and real local accounts.

An agent-kind account (``[approvals] agents = user:bot``) submits gated tasks with add_task and
add_tasks over HTTP Basic; they are held. Approvers decide with HTTP Basic (a fresh login); the
same decision with a bearer token from POST /auth/token is refused. One scheduler serves the
whole module: every test uses task ids of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from audit_records import caller_records

from conftest import Server, cli, free_port, scheduler_conf

CONFIG = """
[approvals]
agents = user:bot
[approval.backfill]
families = Backfill
approvals = 2
approvers = user:alice user:carol user:dave
"""
PASSWORDS = {"bot": "bot-password-1234", "alice": "alice-password-1234", "carol": "carol-password-1234",
             "dave": "dave-password-1234", "erin": "erin-password-1234"}
ROLES = {"bot": "worker", "alice": "viewer", "carol": "viewer", "dave": "operator", "erin": "operator"}
WORKER = "bot-worker"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """As conftest's configured_server(CONFIG), once for the module, with the accounts above."""
    root = tmp_path_factory.mktemp("approvals-api")
    users, state_dir, port = root / "users", root / "state", free_port()
    for name, role, password in [("admin", "admin", "admin-password-123"),
                                 *((n, ROLES[n], PASSWORDS[n]) for n in PASSWORDS)]:
        result = cli("user", "--users-file", str(users), "add", name, "--role", role, input=password + "\n")
        assert result.returncode == 0, result.stderr
    state_dir.mkdir(mode=0o750)
    (state_dir / "admin-password").write_text("admin-password-123\n")
    conf = scheduler_conf(root, port, state_dir, users, CONFIG)
    scheduler = Server(["--config", str(conf), "serve"], state_dir, port, root / "server.log").start()
    yield scheduler
    scheduler.stop()


def as_user(server: Server, name: str) -> requests.Session:
    return server.session(name, server.admin_password if name == "admin" else PASSWORDS[name])


def bearer(server: Server, name: str) -> requests.Session:
    """A session carrying a bearer token of ``name`` (from POST /auth/token), no password."""
    resp = as_user(server, name).post(f"{server.url}/auth/token", timeout=10)
    assert resp.status_code == 200, resp.text
    s = requests.Session()
    s.trust_env = False
    s.verify = str(server.ca_file)
    s.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
    return s


def call(server: Server, who: str | requests.Session, method: str, **data) -> requests.Response:
    return server.rpc(method, session=as_user(server, who) if isinstance(who, str) else who, **data)


def ok(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    return resp.json()["response"]


def refused(resp: requests.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == status
    return body["reason"]


def submit(server: Server, day: str, deps: list[str] | None = None) -> tuple[str, str]:
    """bot's add_task of Backfill(day): (task id, request id)."""
    task_id = f"Backfill_{day}_ab12"
    answer = ok(call(server, "bot", "add_task", worker=WORKER, task_id=task_id, family="Backfill", status="PENDING",
                     params={"day": day}, deps=deps or []))
    assert answer["approval_request"].startswith("apr-"), answer
    return task_id, answer["approval_request"]


def request_of(server: Server, request_id: str) -> dict:
    return ok(call(server, "erin", "approval_show", request_id=request_id))["request"]


def approvers(request: dict) -> list[str]:
    return [decision["principal"] for decision in request["approvals"]]


def get_work(server: Server) -> str | None:
    return ok(call(server, "bot", "get_work", worker=WORKER, host="bot-host"))["task_id"]


def audit(server: Server) -> list[dict]:
    return caller_records(server.state_dir.parent / "audit.log")


def test_list_and_show_the_held_request_with_its_task(server: Server) -> None:
    assert ok(call(server, "bot", "add_task", worker=WORKER, task_id="Extract_d1_cd34", family="Extract",
                   status="PENDING", params={"day": "d1"})) is None  # not gated: luigi's own answer
    task_id, request_id = submit(server, "d1", deps=["Extract_d1_cd34", "Missing_d1_ef56"])
    # Any signed-in viewer may look, with GET or POST.
    listed = ok(as_user(server, "alice").get(f"{server.url}/api/approvals_list",
                                             params={"data": json.dumps({"state": "pending"})}, timeout=10))
    mine = [r for r in listed["requests"] if r["id"] == request_id]
    assert len(mine) == 1 and mine[0]["task_id"] == task_id and mine[0]["state"] == "pending"
    assert mine[0]["requester"] == "bot" and mine[0]["requester_kind"] == "agent"
    assert mine[0]["missing"] == ["2 more from user:alice or user:carol or user:dave (backfill)"]
    approved = ok(call(server, "alice", "approvals_list", state="approved"))["requests"]
    assert request_id not in [r["id"] for r in approved]
    everything = ok(call(server, "alice", "approvals_list"))["requests"]
    assert request_id in [r["id"] for r in everything]
    assert [r["created"] for r in everything] == sorted((r["created"] for r in everything), reverse=True)

    shown = ok(call(server, "alice", "approval_show", request_id=request_id))
    assert shown["request"]["id"] == request_id and shown["request"]["params"] == {"day": "d1"}
    task = shown["task"]
    assert task["status"] == "PENDING" and task["error"] is None
    assert task["status_message"].startswith(f"Awaiting approval ({request_id}): requested by bot (agent)")
    assert task["deps"] == [{"task_id": "Extract_d1_cd34", "status": "PENDING"},
                            {"task_id": "Missing_d1_ef56", "status": "UNKNOWN"}]
    # The dependency is not gated: it runs; the held task is never handed out.
    assert get_work(server) == "Extract_d1_cd34"

    assert "no approval request 'apr-000000000000'" in refused(
        call(server, "alice", "approval_show", request_id="apr-000000000000"), 404)
    assert "needs argument request_id" in refused(call(server, "alice", "approval_show"), 400)
    assert "argument state must be one of pending" in refused(call(server, "alice", "approvals_list", state="x"), 400)
    assert "takes no argument(s) colour" in refused(call(server, "alice", "approvals_list", colour="red"), 400)


def test_the_requester_a_bearer_token_a_non_approver_and_a_get_are_refused(server: Server) -> None:
    _, request_id = submit(server, "d2")
    own = refused(call(server, "bot", "approve", request_id=request_id, comment="mine"), 403)
    assert own == f"bot asked for {request_id} and may not approve it"
    token = refused(call(server, bearer(server, "alice"), "approve", request_id=request_id), 403)
    assert token.startswith("this decision needs a fresh login") and "not a bearer token" in token
    # A token reads all the same (only the decision needs a fresh login).
    read = ok(call(server, bearer(server, "alice"), "approval_show", request_id=request_id))
    assert read["request"]["id"] == request_id
    stranger = refused(call(server, "erin", "approve", request_id=request_id), 403)
    assert stranger.startswith(f"erin is not among the approvers of {request_id}")
    get = as_user(server, "alice").get(f"{server.url}/api/approve",
                                       params={"data": json.dumps({"request_id": request_id})}, timeout=10)
    assert refused(get, 405) == "state-changing method: use POST" and get.headers["Allow"] == "POST"
    assert "must be true or false" in refused(call(server, "alice", "approve", request_id=request_id,
                                                   break_glass="yes"), 400)
    assert request_of(server, request_id)["approvals"] == [] and get_work(server) is None
    # Each call, refused or not, is one rpc line; refusals are logged with who and why.
    lines = [(x["principal"], x["method"], x["outcome"]) for x in audit(server)
             if x["event"] == "rpc" and x.get("request") == request_id]
    assert lines == [("bot", "approve", "refused:403"), ("alice", "approve", "refused:403"),
                     ("erin", "approve", "refused:403"), ("alice", "approve", "refused:405"),
                     ("alice", "approve", "refused:400")]
    assert f"Refused RPC approve for erin: erin is not among the approvers of {request_id}" in server.log()


def test_two_distinct_approvers_release_the_task_and_the_same_twice_counts_once(server: Server) -> None:
    task_id, request_id = submit(server, "d3")
    first = ok(call(server, "alice", "approve", request_id=request_id, comment="looks right"))["request"]
    assert first["state"] == "pending" and approvers(first) == ["alice"]
    assert first["missing"] and first["missing"][0].startswith("1 more from")
    assert get_work(server) is None
    again = refused(call(server, "alice", "approve", request_id=request_id), 409)
    assert again == f"alice already approved {request_id}; an approver counts once"
    assert approvers(request_of(server, request_id)) == ["alice"]
    second = ok(call(server, "carol", "approve", request_id=request_id))["request"]
    assert second["state"] == "approved" and approvers(second) == ["alice", "carol"] and second["missing"] == []
    assert get_work(server) == task_id
    assert f"{request_id} is approved, not pending" in refused(call(server, "dave", "approve",
                                                                    request_id=request_id), 409)
    assert ok(call(server, "alice", "approvals_list", state="approved"))["requests"][0]["id"] == request_id
    outcomes = [(x["principal"], x["outcome"]) for x in audit(server)
                if x["event"] == "approval" and x["request"] == request_id]
    assert outcomes == [("bot", "requested"), ("alice", "approval"), ("carol", "approval"), ("carol", "approved"),
                        (None, "run_started")]


def test_deny_needs_a_comment_and_fails_the_task_with_it(server: Server) -> None:
    task_id, request_id = submit(server, "d4")
    assert refused(call(server, "dave", "deny", request_id=request_id), 400) == \
        "a comment explaining the denial is required"
    assert refused(call(server, "dave", "deny", request_id=request_id, comment="   "), 400) == \
        "a comment explaining the denial is required"
    assert "fresh login" in refused(call(server, bearer(server, "dave"), "deny", request_id=request_id,
                                         comment="no"), 403)
    assert refused(call(server, "erin", "deny", request_id=request_id, comment="no"), 403) == \
        f"erin is not among the approvers of {request_id}"
    denied = ok(call(server, "dave", "deny", request_id=request_id, comment="Wrong day: use d5."))["request"]
    assert denied["state"] == "denied" and denied["reason"] == "denied by dave: Wrong day: use d5."
    assert task_id in ok(call(server, "erin", "task_list", status="FAILED", upstream_status=""))
    error = ok(call(server, "erin", "fetch_error", task_id=task_id))["error"]
    assert "Wrong day: use d5." in error
    assert ok(call(server, "erin", "approval_show", request_id=request_id))["task"]["status"] == "FAILED"
    assert get_work(server) is None
    assert refused(call(server, "dave", "deny", request_id=request_id, comment="again"), 409) == \
        f"{request_id} is denied, not pending"
    lines = [(x["principal"], x["method"], x["outcome"]) for x in audit(server)
             if x["event"] == "rpc" and x.get("request") == request_id]
    assert lines == [("dave", "deny", "refused:400"), ("dave", "deny", "refused:400"), ("dave", "deny", "refused:403"),
                     ("erin", "deny", "refused:403"), ("dave", "deny", "ok"), ("dave", "deny", "refused:409")]


def test_break_glass_needs_an_admin_and_a_reason_and_is_audited(server: Server) -> None:
    task_id, request_id = submit(server, "d6")
    assert refused(call(server, "alice", "approve", request_id=request_id, break_glass=True,
                        comment="urgent"), 403) == "break-glass approval needs role admin"
    assert refused(call(server, "admin", "approve", request_id=request_id, break_glass=True), 400) == \
        "a break-glass reason is required"
    assert "fresh login" in refused(call(server, bearer(server, "admin"), "approve", request_id=request_id,
                                         break_glass=True, comment="Incident 7"), 403)
    approved = ok(call(server, "admin", "approve", request_id=request_id, break_glass=True,
                       comment="Incident 7: month-end close"))["request"]
    assert approved["state"] == "approved" and approvers(approved) == ["admin"]
    assert approved["approvals"][0]["break_glass"] is True
    assert get_work(server) == task_id
    records = audit(server)
    glass = [x for x in records if x["event"] == "approval" and x["request"] == request_id
             and x["outcome"] == "break_glass"]
    assert len(glass) == 1 and glass[0]["principal"] == "admin" and glass[0]["comment"] == "Incident 7: month-end close"
    calls = [(x["principal"], x["outcome"], x.get("break_glass")) for x in records
             if x["event"] == "rpc" and x.get("request") == request_id]
    assert calls == [("alice", "refused:403", True), ("admin", "refused:400", True), ("admin", "refused:403", True),
                     ("admin", "ok", True)]
    assert f"WARNING luigi_appliance.approvals: Approval {request_id} break_glass: add_task Backfill of {task_id} " \
           "by admin: Incident 7: month-end close" in server.log()


def test_add_tasks_answers_which_tasks_are_held(server: Server) -> None:
    tasks = [{"task_id": "Extract_d7_cd34", "family": "Extract", "status": "PENDING", "params": {"day": "d7"}},
             {"task_id": "Backfill_d7_ab12", "family": "Backfill", "status": "PENDING", "params": {"day": "d7"},
              "deps": ["Extract_d7_cd34"]}]
    answer = ok(call(server, "bot", "add_tasks", worker=WORKER, tasks=tasks))
    assert answer["tasks"] == 2 and len(answer["held"]) == 1, answer
    held = answer["held"][0]
    assert held["task_id"] == "Backfill_d7_ab12" and held["approval_request"].startswith("apr-")
    assert held["summary"].startswith(f"Awaiting approval ({held['approval_request']}): requested by bot (agent)")
    assert request_of(server, held["approval_request"])["task_id"] == "Backfill_d7_ab12"
    # Submitted again (a worker re-running its graph): the same request, still held.
    assert ok(call(server, "bot", "add_tasks", worker=WORKER, tasks=tasks))["held"] == [held]


def test_a_scheduler_without_rules_answers_404(dev_server: Server) -> None:
    for method, data in (("approvals_list", {}), ("approval_show", {"request_id": "apr-1"}),
                         ("approve", {"request_id": "apr-1"})):
        assert refused(dev_server.rpc(method, **data), 404) == "no approval rules are configured"
    assert ok(dev_server.rpc("add_tasks", worker="w", tasks=[{"task_id": "Job_1", "family": "Job"}])) == \
        {"tasks": 1, "held": []}
