"""Approval gates end to end: real schedulers, real local accounts, stock luigi workers running
tests/pipelines/approval_pipeline.py over HTTPS, decisions through the approval RPCs.

The workers are luigi's own (``luigi --module ...`` with ``[core] scheduler_url`` carrying HTTP
Basic credentials and ``[worker] keep_alive``), not ``luigi-appliance run``: what holds a task
back must be the scheduler, whatever the client does. A keep-alive luigi worker stays while the
scheduler counts one of its tasks PENDING, so it waits out a held task and runs it once
approved. luigi counts a FAILED task too (a keep-alive worker retries it after retry_delay), so
the worker of a denied or expired request ends by luigi's idle limit, reporting the task as not
granted run permission; the reason is the task's error in the scheduler. What ran is read from
the files the tasks write. One scheduler serves the module (each test has task ids of its own);
the restart test has one of its own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import luigi
import pytest
import requests
from audit_records import caller_records

from conftest import BIN, PIPELINES, Server, free_port, scheduler_conf

sys.path.insert(0, str(PIPELINES))
from approval_pipeline import Deploy, Expiring, Flaky, Prepare, Release, Releases

LUIGI = BIN.parent / "luigi"
EXPIRY = 3.0
CONFIG = f"""
[approvals]
agents = user:agent
[approval.agent-deploys]
families = Deploy
requesters = kind:agent
approvers = role:operator
actions = add_task
[approval.prod-releases]
families = Release
params = env=prod
approvals = 2
approvers = role:operator
actions = add_task
[approval.quick]
families = Expiring
request_expiry = {EXPIRY:g}s
approvers = role:operator
actions = add_task
[approval.flaky-reruns]
families = Flaky
approvers = role:operator
actions = forgive_failures
"""
ROLES = {"agent": "worker", "runner": "worker", "alice": "operator", "bob": "operator", "carol": "operator"}
ADMIN_PASSWORD = "admin-password-123"
# Exit codes of luigi's worker ([retcode]); luigi's defaults say 0 for most failures.
RETCODES = {"missing_data": 20, "not_run": 25, "task_failed": 30, "scheduling_error": 35, "unhandled_exception": 40}
# luigi's keep-alive worker also stays while a task of its is FAILED (it would retry it after
# [scheduler] retry_delay), so a worker whose task is denied or expires is given an idle limit
# to end by, well above how long its test takes to decide.
IDLE_LIMIT = 8
WAIT = 60.0  # generous bound on anything a test waits for; the waits end as soon as it happens


def password(name: str) -> str:
    return ADMIN_PASSWORD if name == "admin" else f"{name}-long-password"


def make_accounts(users: Path) -> None:
    """admin and the accounts of ROLES in ``users``, each added by ``luigi-appliance user add``.
    One at a time takes over ten seconds (each hashes its password), so each goes to a file of
    its own at once, and their lines (``name:role:hash``) are put together."""
    adds = []
    for name, role in {"admin": "admin", **ROLES}.items():
        single = users.parent / f"users-{name}"
        adds.append((single, subprocess.Popen([str(BIN), "user", "--users-file", str(single), "add", name,
                                               "--role", role], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True)))
    lines = []
    for (single, add), name in zip(adds, ["admin", *ROLES], strict=True):
        _, err = add.communicate(password(name) + "\n", timeout=120)
        assert add.returncode == 0, err
        lines += [line for line in single.read_text().splitlines() if line.startswith(f"{name}:")]
    users.write_text("".join(f"{line}\n" for line in lines))
    users.chmod(0o600)


def scheduler_at(root: Path, users: Path) -> Server:
    """As conftest's configured_server(CONFIG), with the accounts of ``users`` (not started)."""
    state_dir, port = root / "state", free_port()
    state_dir.mkdir(mode=0o750)
    (state_dir / "admin-password").write_text(ADMIN_PASSWORD + "\n")
    conf = scheduler_conf(root, port, state_dir, users, CONFIG, snapshot_interval="1")
    return Server(["--config", str(conf), "serve"], state_dir, port, root / "server.log")


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("approvals-accounts") / "users"
    make_accounts(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, users: Path) -> Iterator[Server]:
    scheduler = scheduler_at(tmp_path_factory.mktemp("approvals-pipeline"), users).start()
    yield scheduler
    scheduler.stop()


# ---- workers --------------------------------------------------------------------------------

class Worker:
    """One stock luigi worker process, signed in as ``user``, running ``task`` and its deps."""

    def __init__(self, server: Server, directory: Path, user: str, *task: str, retry_attempts: int = 3,
                 keep_alive: bool = True, idle_limit: int = 0):
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"worker-{user}-{time.monotonic_ns()}.log"
        config = directory / f"luigi-{user}.cfg"
        retcodes = "\n".join(f"{k} = {v}" for k, v in RETCODES.items())
        config.write_text(f"""
[core]
scheduler_url = https://{user}:{password(user)}@127.0.0.1:{server.port}/
rpc_retry_attempts = {retry_attempts}
rpc_retry_wait = 1
[worker]
keep_alive = {str(keep_alive).lower()}
max_keep_alive_idle_duration = {idle_limit} seconds
wait_interval = 0.3
wait_jitter = 0.1
ping_interval = 1
[retcode]
{retcodes}
""")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(directory), "PYTHONPATH": str(PIPELINES),
               "LUIGI_CONFIG_PATH": str(config), "REQUESTS_CA_BUNDLE": str(server.ca_file)}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(LUIGI), "--module", "approval_pipeline", *task], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=directory)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = WAIT) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the worker did not end within {timeout}s:\n{self.log()[-4000:]}") from None
        self._log.close()
        return code

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    """Start workers; any still running when the test ends is stopped (a failed test's leftovers)."""
    started: list[Worker] = []

    def start(server: Server, directory: Path, user: str, *task: str, **kwargs) -> Worker:
        worker = Worker(server, directory, user, *task, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def ran_ok(worker: Worker) -> None:
    code = worker.wait()
    assert code == 0, f"worker exited {code}:\n{worker.log()[-4000:]}"


def ran_failed(worker: Worker, retcode: str = "not_run") -> str:
    """The worker's log, once it ended as luigi ends a run with ``retcode`` ([retcode] keys):
    ``not_run`` when the scheduler never handed it its task, ``task_failed`` when a run failed."""
    code = worker.wait()
    log = worker.log()
    assert code == RETCODES[retcode], f"worker exited {code}, expected {retcode}:\n{log[-4000:]}"
    return log


def never_ran(log: str, task: luigi.Task) -> None:
    """luigi's summary: ``task`` was left pending, never handed to this worker."""
    assert f"running   {task}" not in log
    assert "1 was not granted run permission by the scheduler:" in log
    assert f"- 1 {task}" in log


# ---- the API --------------------------------------------------------------------------------

def session(server: Server, name: str) -> requests.Session:
    return server.session(name, password(name))


def call(server: Server, who: str, method: str, **data) -> requests.Response:
    return server.rpc(method, session=session(server, who), **data)


def ok(resp: requests.Response):
    assert resp.status_code == 200, resp.text
    return resp.json()["response"]


def refused(resp: requests.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == status, resp.text
    return resp.json()["reason"]


def eventually(check: Callable[[], object], what: str, timeout: float = WAIT, worker: Worker | None = None):
    """``check()``'s first true answer, asked every 0.2 s; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        if worker is not None and not worker.alive():
            break
        time.sleep(0.2)
    log = f"\nworker log:\n{worker.log()[-4000:]}" if worker is not None else ""
    raise AssertionError(f"not seen within {timeout}s: {what}{log}")


def requests_of(server: Server, task_id: str, state: str | None = "pending") -> list[dict]:
    listed = ok(call(server, "carol", "approvals_list", state=state))["requests"]
    return [r for r in listed if r["task_id"] == task_id]


def held(server: Server, task_id: str, worker: Worker) -> dict:
    """The pending request that holds ``task_id``, once the worker's submission opened it."""
    found = eventually(lambda: requests_of(server, task_id), f"a pending request for {task_id}", worker=worker)
    assert len(found) == 1, found
    return found[0]


def show(server: Server, request_id: str) -> dict:
    return ok(call(server, "carol", "approval_show", request_id=request_id))


def task_info(server: Server, task_id: str) -> dict:
    tasks = ok(call(server, "admin", "task_list", status="", upstream_status=""))
    return tasks[task_id]


def approve(server: Server, who: str, request_id: str, **data) -> requests.Response:
    return call(server, who, "approve", request_id=request_id, **data)


def assert_still_held(server: Server, task_id: str, output: Path, worker: Worker) -> None:
    """Held: PENDING with the awaiting message, its output not written, its worker waiting.
    Asked twice, a few of the worker's get_work rounds apart."""
    for _ in range(2):
        info = task_info(server, task_id)
        assert info["status"] == "PENDING", info
        assert info["status_message"].startswith("Awaiting approval ("), info
        assert not output.exists()
        assert worker.alive(), worker.log()[-4000:]
        time.sleep(1.0)


def audit(server: Server, request_id: str) -> list[dict]:
    records = caller_records(server.state_dir.parent / "audit.log")
    return [r for r in records if r.get("event") == "approval" and r.get("request") == request_id]


# ---- the tests ------------------------------------------------------------------------------

def test_an_agents_pipeline_waits_then_runs_once_approved(server: Server, tmp_path: Path, workers) -> None:
    out = tmp_path / "out"
    task = Deploy(out_dir=str(out), name="waits")
    worker = workers(server, tmp_path, "agent", "Deploy", "--out-dir", str(out), "--name", "waits")
    request = held(server, task.task_id, worker)
    assert (request["requester"], request["requester_kind"], request["family"]) == ("agent", "agent", "Deploy")
    assert request["params"] == {"out_dir": str(out), "name": "waits"}
    assert request["missing"] == ["1 more from role:operator (agent-deploys)"]
    # The ungated dependency ran; the gated task did not, and the worker waits for it.
    prepare = Prepare(out_dir=str(out), name="deploy-waits")
    eventually(lambda: Path(prepare.output().path).exists(), "the dependency's output", worker=worker)
    assert task_info(server, prepare.task_id)["status"] == "DONE"
    assert_still_held(server, task.task_id, out / "deploy-waits", worker)
    shown = show(server, request["id"])
    assert shown["task"]["status"] == "PENDING"
    assert shown["task"]["deps"] == [{"task_id": prepare.task_id, "status": "DONE"}]
    # Not that an agent could approve anything here: its own request is refused before that.
    assert "may not approve" in refused(approve(server, "agent", request["id"]), 403)

    decided = ok(approve(server, "alice", request["id"], comment="looks right"))["request"]
    assert decided["state"] == "approved" and decided["approvals"][0]["principal"] == "alice"
    ran_ok(worker)
    assert (out / "deploy-waits").read_text() == f"{task.task_id}\n"
    assert task_info(server, task.task_id)["status"] == "DONE"
    assert show(server, request["id"])["request"]["state"] == "done"


def test_the_requester_may_not_approve_their_own_request(server: Server, tmp_path: Path, workers) -> None:
    # alice is an operator, so role:operator would count her, but not for what she asked for.
    out = tmp_path / "out"
    task = Release(out_dir=str(out), env="prod", tag="own")
    worker = workers(server, tmp_path, "alice", "Release", "--out-dir", str(out), "--env", "prod", "--tag", "own",
                     idle_limit=IDLE_LIMIT)
    request = held(server, task.task_id, worker)
    assert request["requester"] == "alice" and request["requester_kind"] == "person"
    reason = refused(approve(server, "alice", request["id"], comment="mine, trust me"), 403)
    assert reason == f"alice asked for {request['id']} and may not approve it"
    assert show(server, request["id"])["request"]["approvals"] == []
    assert_still_held(server, task.task_id, out / "release-prod-own", worker)
    # She may withdraw it, which denies it: her worker ends without running it.
    ok(call(server, "alice", "deny", request_id=request["id"], comment="withdrawn"))
    never_ran(ran_failed(worker), task)
    assert not (out / "release-prod-own").exists()


def test_two_distinct_approvers_and_the_same_one_twice_counts_once(server: Server, tmp_path: Path, workers) -> None:
    out = tmp_path / "out"
    task = Release(out_dir=str(out), env="prod", tag="two")
    worker = workers(server, tmp_path, "runner", "Release", "--out-dir", str(out), "--env", "prod", "--tag", "two")
    request = held(server, task.task_id, worker)
    assert request["missing"] == ["2 more from role:operator (prod-releases)"]
    once = ok(approve(server, "alice", request["id"], comment="first"))["request"]
    assert once["state"] == "pending" and once["missing"] == ["1 more from role:operator (prod-releases)"]
    reason = refused(approve(server, "alice", request["id"], comment="again"), 409)
    assert "counts once" in reason
    after = show(server, request["id"])
    assert [d["principal"] for d in after["request"]["approvals"]] == ["alice"]
    assert after["request"]["missing"] == ["1 more from role:operator (prod-releases)"]
    assert_still_held(server, task.task_id, out / "release-prod-two", worker)

    assert ok(approve(server, "bob", request["id"]))["request"]["state"] == "approved"
    ran_ok(worker)
    assert (out / "release-prod-two").exists()


def test_an_approval_for_some_parameters_does_not_release_others(server: Server, tmp_path: Path, workers) -> None:
    out = tmp_path / "out"
    first, second = (Release(out_dir=str(out), env="prod", tag=tag) for tag in ("a", "b"))
    worker = workers(server, tmp_path, "runner", "Releases", "--out-dir", str(out), "--env", "prod",
                     "--first", "a", "--second", "b")
    request_a, request_b = held(server, first.task_id, worker), held(server, second.task_id, worker)
    assert request_a["id"] != request_b["id"]
    assert (request_a["params"]["tag"], request_b["params"]["tag"]) == ("a", "b")
    for who in ("alice", "bob"):
        ok(approve(server, who, request_a["id"]))
    eventually((out / "release-prod-a").exists, "the approved release's output", worker=worker)
    assert show(server, request_b["id"])["request"]["state"] == "pending"
    assert_still_held(server, second.task_id, out / "release-prod-b", worker)
    assert not (out / "releases-prod-a-b").exists()

    for who in ("bob", "carol"):
        ok(approve(server, who, request_b["id"]))
    ran_ok(worker)
    assert (out / "release-prod-b").exists()
    both = Releases(out_dir=str(out), env="prod", first="a", second="b")
    assert (out / "releases-prod-a-b").read_text() == f"{both.task_id}\n"


def test_an_undecided_request_expires_and_fails_its_task(server: Server, tmp_path: Path, workers) -> None:
    out = tmp_path / "out"
    task = Expiring(out_dir=str(out), name="late")
    worker = workers(server, tmp_path, "runner", "Expiring", "--out-dir", str(out), "--name", "late",
                     idle_limit=IDLE_LIMIT)
    request = held(server, task.task_id, worker)
    assert request["expires"] == pytest.approx(request["created"] + EXPIRY)
    # Nobody decides: the keep-alive worker ends by itself, the task failed with the reason.
    never_ran(ran_failed(worker), task)
    assert Path(Prepare(out_dir=str(out), name="expiring-late").output().path).exists()
    assert not (out / "expiring-late").exists()
    ended = show(server, request["id"])
    assert ended["request"]["state"] == "expired"
    reason = "no decision before the request expired"
    assert ended["request"]["reason"] == reason
    assert ended["task"]["status"] == "FAILED"
    error = ok(call(server, "admin", "fetch_error", task_id=task.task_id))["error"]
    assert error == f"Expired ({request['id']}): {reason}"
    assert "is expired, not pending" in refused(approve(server, "alice", request["id"]), 409)
    assert [r["outcome"] for r in audit(server, request["id"])] == ["requested", "expired"]


def test_a_denied_request_fails_its_task_with_the_comment(server: Server, tmp_path: Path, workers) -> None:
    out = tmp_path / "out"
    task = Deploy(out_dir=str(out), name="denied")
    worker = workers(server, tmp_path, "agent", "Deploy", "--out-dir", str(out), "--name", "denied",
                     idle_limit=IDLE_LIMIT)
    request = held(server, task.task_id, worker)
    assert "comment" in refused(call(server, "alice", "deny", request_id=request["id"], comment=" "), 400)
    assert_still_held(server, task.task_id, out / "deploy-denied", worker)
    comment = "not during the change freeze"
    assert ok(call(server, "alice", "deny", request_id=request["id"], comment=comment))["request"]["state"] == "denied"
    never_ran(ran_failed(worker), task)
    assert not (out / "deploy-denied").exists()
    error = ok(call(server, "admin", "fetch_error", task_id=task.task_id))["error"]
    assert error == f"Denied ({request['id']}): denied by alice: {comment}"
    assert task_info(server, task.task_id)["status"] == "FAILED"
    records = audit(server, request["id"])
    assert [r["outcome"] for r in records] == ["requested", "denied"]
    assert (records[1]["principal"], records[1]["comment"]) == ("alice", comment)


def test_break_glass_by_an_admin_releases_alone_and_is_audited(server: Server, tmp_path: Path, workers) -> None:
    out = tmp_path / "out"
    task = Release(out_dir=str(out), env="prod", tag="glass")
    worker = workers(server, tmp_path, "runner", "Release", "--out-dir", str(out), "--env", "prod", "--tag", "glass")
    request = held(server, task.task_id, worker)
    assert "reason" in refused(approve(server, "admin", request["id"], break_glass=True), 400)
    assert "needs role admin" in refused(approve(server, "alice", request["id"], break_glass=True,
                                                 comment="I am in a hurry"), 403)
    assert_still_held(server, task.task_id, out / "release-prod-glass", worker)
    reason = "incident 4711: the release fixes the outage"
    decided = ok(approve(server, "admin", request["id"], break_glass=True, comment=reason))["request"]
    assert decided["state"] == "approved" and decided["approvals"][0]["break_glass"] is True
    ran_ok(worker)
    assert (out / "release-prod-glass").exists()

    def through_the_run() -> list[dict]:
        records = audit(server, request["id"])
        return records if records and records[-1]["outcome"] == "run_done" else []

    records = eventually(through_the_run, "the run_done audit line")
    assert [r["outcome"] for r in records] == ["requested", "break_glass", "approved", "run_started", "run_done"]
    glass = records[1]
    assert (glass["principal"], glass["comment"]) == ("admin", reason)
    assert {r["task_id"] for r in records} == {task.task_id}
    assert f"Approval {request['id']} break_glass" in server.log()
    assert any("WARNING" in line for line in server.log().splitlines()
               if f"Approval {request['id']} break_glass" in line)


def test_forgiving_a_failed_gated_task_waits_for_approval(server: Server, tmp_path: Path, workers) -> None:
    out = tmp_path / "out"
    out.mkdir()
    task = Flaky(out_dir=str(out))
    # Its first run is not gated (the rule gates forgive_failures only): it runs and fails.
    log = ran_failed(workers(server, tmp_path, "runner", "Flaky", "--out-dir", str(out), keep_alive=False),
                     "task_failed")
    assert "RuntimeError: Flaky failed on purpose" in log
    assert task_info(server, task.task_id)["status"] == "FAILED"

    answer = ok(call(server, "carol", "forgive_failures", task_id=task.task_id))
    request_id = answer["approval_request"]
    assert answer["status"] == "FAILED"
    assert task_info(server, task.task_id)["status"] == "FAILED"  # nothing forgiven yet
    request = show(server, request_id)["request"]
    assert (request["action"], request["requester"], request["state"]) == ("forgive_failures", "carol", "pending")
    assert "may not approve" in refused(approve(server, "carol", request_id), 403)
    time.sleep(1.0)
    assert task_info(server, task.task_id)["status"] == "FAILED"

    assert ok(approve(server, "bob", request_id, comment="fixed upstream"))["request"]["state"] == "done"
    assert task_info(server, task.task_id)["status"] == "PENDING"
    assert [r["outcome"] for r in audit(server, request_id)] == ["requested", "approval", "approved", "applied"]
    (out / "flaky-may-succeed").touch()
    ran_ok(workers(server, tmp_path, "runner", "Flaky", "--out-dir", str(out)))
    assert (out / "flaky").exists()


def test_a_restart_keeps_the_request_pending_and_the_task_held(tmp_path: Path, users: Path, workers) -> None:
    server = scheduler_at(tmp_path, users).start()
    try:
        out = tmp_path / "out"
        task = Deploy(out_dir=str(out), name="restart")
        # Enough retries to outlast the restart: the same worker waits on, then runs it.
        worker = workers(server, tmp_path, "agent", "Deploy", "--out-dir", str(out), "--name", "restart",
                         retry_attempts=60)
        request = held(server, task.task_id, worker)
        eventually(lambda: Path(Prepare(out_dir=str(out), name="deploy-restart").output().path).exists(),
                   "the dependency's output", worker=worker)
        assert server.stop(signal.SIGTERM) == 0
        server.start()

        again = show(server, request["id"])
        assert again["request"]["state"] == "pending" and again["request"]["requester"] == "agent"
        assert again["task"]["status"] == "PENDING"
        # No worker gets it: neither an assistant, which may take any runnable task, nor its own.
        work = ok(call(server, "runner", "get_work", worker="probe-assistant", host="probe", assistant=True))
        assert work["task_id"] is None
        assert_still_held(server, task.task_id, out / "deploy-restart", worker)

        ok(approve(server, "bob", request["id"]))
        ran_ok(worker)
        assert (out / "deploy-restart").exists()
        assert show(server, request["id"])["request"]["state"] == "done"
    finally:
        server.stop()
