"""Approval gates in a real scheduler (luigi_appliance/scheduler/approval_gate.py), in process: the
caller is set as the guard sets it for each RPC, the clock of the requests is driven by hand, the
audit events are recorded. What a held task may and may not do, what a decision changes, and
that a snapshot keeps it all."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from luigi.task_status import BATCH_RUNNING, DISABLED, DONE, FAILED, PENDING, RUNNING, SUSPENDED, UNKNOWN

from luigi_appliance import state
from luigi_appliance.approvals.book import ApprovalBook, ApprovalRefused, ApprovalRequest
from luigi_appliance.approvals.events import ApprovalEvents
from luigi_appliance.approvals.rules import ApprovalRules
from luigi_appliance.approvals.selectors import Selector
from luigi_appliance.approvals.settings import ApprovalPolicy, ApprovalRuleSettings, ApprovalsSettings
from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.context import Caller, current_caller
from luigi_appliance.errors import StateError
from luigi_appliance.scheduler import Scheduler
from luigi_appliance.scheduler.approval_gate import Approvals

AGENT = Principal("copilot", Role.WORKER, "local")
PERSON = Principal("pat", Role.WORKER, "local")
ALICE = Principal("alice", Role.VIEWER, "ldap", frozenset({"data-owners"}))
BOB = Principal("bob", Role.VIEWER, "ldap", frozenset({"data-owners"}))
CAROL = Principal("carol", Role.OPERATOR, "local")
ROOT = Principal("root", Role.ADMIN, "local")

OWNERS = (Selector("group", "data-owners"),)
BACKFILL = "Backfill"
PROD = {"env": "prod"}


def backfill_id(env: str = "prod", day: str = "1") -> str:
    return f"Backfill_{env}_{day}"


@dataclass
class RecordingSink:
    """The audit trail's record() as the events call it, kept in order."""

    lines: list[dict[str, Any]] = field(default_factory=list)

    def record(self, event: str, *, principal: str | None, source: str, outcome: str, **fields: Any) -> None:
        self.lines.append({"event": event, "principal": principal, "source": source, "outcome": outcome, **fields})

    def outcomes(self, request_id: str) -> list[str]:
        return [line["outcome"] for line in self.lines if line["request"] == request_id]


@dataclass
class Clock:
    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def rule(**values: Any) -> ApprovalRuleSettings:
    values.setdefault("families", ("Backfill*",))
    values.setdefault("params", (("env", "prod"),))
    values.setdefault("requesters", (Selector("kind", "agent"),))
    values.setdefault("approvals", 2)
    values.setdefault("approvers", OWNERS)
    return ApprovalRuleSettings(**values)


@dataclass
class Gated:
    scheduler: Scheduler
    clock: Clock
    audit: RecordingSink


def gated(rules: dict[str, ApprovalRuleSettings] | None = None, settings: ApprovalsSettings | None = None,
          **scheduler_args: Any) -> Gated:
    settings = settings or ApprovalsSettings(agents=(Selector("user", "copilot"),))
    policy = ApprovalPolicy(settings, {"prod-backfill": rule()} if rules is None else rules)
    clock, audit = Clock(), RecordingSink()
    approvals = Approvals(ApprovalRules(policy), ApprovalEvents(audit), clock=clock)
    return Gated(Scheduler(approvals=approvals, **scheduler_args), clock, audit)


@contextlib.contextmanager
def calling(principal: Principal) -> Iterator[None]:
    """As the guard does for one RPC (server/guard.py prepare())."""
    token = current_caller.set(Caller(principal, "192.0.2.7"))
    try:
        yield
    finally:
        current_caller.reset(token)


def add(scheduler: Scheduler, principal: Principal, worker: str, task_id: str, family: str = BACKFILL,
        params: dict[str, str] | None = None, **kwargs: Any) -> Any:
    with calling(principal):
        return scheduler.add_task(worker=worker, task_id=task_id, family=family,
                                  params=PROD if params is None else params, **kwargs)


def work(scheduler: Scheduler, principal: Principal, worker: str, assistant: bool = False) -> Any:
    with calling(principal):
        return scheduler.get_work(worker=worker, assistant=assistant)


def book(scheduler: Scheduler) -> ApprovalBook:
    assert scheduler.approvals is not None
    return scheduler.approvals.book


def request_of(scheduler: Scheduler, request_id: str) -> ApprovalRequest:
    request = book(scheduler).get(request_id)
    assert request is not None
    return request


def record(scheduler: Scheduler, task_id: str) -> Any:
    task = scheduler.task_record(task_id)
    assert task is not None
    return task


def status(scheduler: Scheduler, task_id: str) -> str:
    task = scheduler.task_record(task_id)
    assert task is not None
    return str(task.status)


def approve(scheduler: Scheduler, request_id: str, *who: Principal, **kwargs: Any) -> Any:
    request = None
    for principal in who:
        with calling(principal):
            request = scheduler.approve_request(request_id, principal, "ok", source="192.0.2.8", **kwargs)
    return request


def held_backfill(g: Gated, task_id: str | None = None, params: dict[str, str] | None = None,
                  **kwargs: Any) -> str:
    answer = add(g.scheduler, AGENT, "agent-w", task_id or backfill_id(), params=params, **kwargs)
    assert isinstance(answer, dict) and answer["approval_request"].startswith("apr-"), answer
    return str(answer["approval_request"])


# -- a held task ----------------------------------------------------------------------------------


def test_an_agents_task_is_held_and_never_handed_out() -> None:
    g = gated()
    s = g.scheduler
    answer = add(s, AGENT, "agent-w", backfill_id(), deps=["Extract_1"])
    assert set(answer) == {"approval_request", "summary"}
    request = book(s).get(answer["approval_request"])
    assert request is not None and request.requester == "copilot" and request.requester_kind == "agent"
    assert answer["summary"].startswith(f"Awaiting approval ({request.id}): requested by copilot (agent)")
    task = s.task_record(backfill_id())
    assert task is not None and task.status == PENDING and task.status_message == answer["summary"]
    # Its dependency is no gated family: it runs.
    assert add(s, AGENT, "agent-w", "Extract_1", family="Extract", params={"day": "1"}) is None
    assert work(s, AGENT, "agent-w")["task_id"] == "Extract_1"
    add(s, AGENT, "agent-w", "Extract_1", family="Extract", params={"day": "1"}, status=DONE)
    reply = work(s, AGENT, "agent-w")
    assert reply["task_id"] is None
    assert reply["n_pending_tasks"] == 1  # still counted: the worker keeps waiting for it
    assert s.count_pending("agent-w")["n_pending_tasks"] == 1
    # Not to an assistant, nor to a worker of a person that wants the same task.
    assert work(s, CAROL, "assistant-w", assistant=True)["task_id"] is None
    again = add(s, PERSON, "pat-w", backfill_id())
    assert again == {"approval_request": request.id, "summary": request.summary()}  # the same request
    assert work(s, PERSON, "pat-w")["task_id"] is None
    assert len(book(s)) == 1
    assert status(s, backfill_id()) == PENDING
    assert g.audit.outcomes(request.id) == ["requested"]
    requested = g.audit.lines[0]
    assert requested["principal"] == "copilot" and requested["source"] == "192.0.2.7"
    assert requested["missing"] == ["2 more from group:data-owners (prod-backfill)"]


def test_approval_releases_the_task_and_its_run_is_audited() -> None:
    g = gated()
    s = g.scheduler
    request_id = held_backfill(g)
    approve(s, request_id, ALICE)
    assert work(s, AGENT, "agent-w")["task_id"] is None  # one of two approvals
    request = approve(s, request_id, BOB)
    assert request.state == "approved"
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id()
    add(s, AGENT, "agent-w", backfill_id(), status=DONE)
    assert status(s, backfill_id()) == DONE
    assert request.state == "done" and request.outcome == "done"
    assert g.audit.outcomes(request_id) == ["requested", "approval", "approval", "approved", "run_started",
                                            "run_done"]
    approvals = [line for line in g.audit.lines if line["outcome"] == "approval"]
    assert [line["principal"] for line in approvals] == ["alice", "bob"]
    assert all(line["task_id"] == backfill_id() for line in g.audit.lines)


def test_a_released_task_goes_to_the_submitting_worker() -> None:
    g = gated()
    s = g.scheduler
    request_id = held_backfill(g)
    approve(s, request_id, ALICE, BOB)
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id()
    assert status(s, backfill_id()) == RUNNING


def test_a_dependency_that_is_gated_itself_is_held_too() -> None:
    g = gated()
    s = g.scheduler
    assert add(s, AGENT, "agent-w", "Report_1", family="Report", params={}, deps=[backfill_id()]) is None
    request_id = held_backfill(g)  # was a placeholder: now a task of a gated family
    assert work(s, AGENT, "agent-w")["task_id"] is None
    approve(s, request_id, ALICE)
    assert record(s, backfill_id()).status_message == request_of(s, request_id).summary()
    assert "1 more from group:data-owners" in record(s, backfill_id()).status_message
    approve(s, request_id, BOB)
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id()


def test_approving_params_a_does_not_release_params_b() -> None:
    g = gated()
    s = g.scheduler
    a = held_backfill(g, backfill_id(day="1"), {"env": "prod", "day": "1"})
    b = held_backfill(g, backfill_id(day="2"), {"env": "prod", "day": "2"})
    assert a != b
    approve(s, a, ALICE, BOB)
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id(day="1")
    assert work(s, AGENT, "agent-w")["task_id"] is None
    assert status(s, backfill_id(day="2")) == PENDING
    assert book(s).holds(backfill_id(day="2"))


def test_deny_fails_the_task_with_the_comment() -> None:
    g = gated()
    s = g.scheduler
    request_id = held_backfill(g)
    with calling(ALICE):
        request = s.deny_request(request_id, ALICE, "wrong partition, use 2024-02", source="192.0.2.8")
    assert request.state == "denied"
    assert status(s, backfill_id()) == FAILED
    error = s.fetch_error(backfill_id())["error"]
    assert "wrong partition, use 2024-02" in error and "denied by alice" in error
    assert record(s, backfill_id()).status_message == error
    assert work(s, AGENT, "agent-w")["task_id"] is None
    assert g.audit.outcomes(request_id) == ["requested", "denied"]
    assert g.audit.lines[-1]["comment"] == "wrong partition, use 2024-02"


def test_a_denied_task_stays_held_when_luigi_retries_it(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    g = gated(retry_delay=5)
    s = g.scheduler
    request_id = held_backfill(g)
    with calling(ALICE):
        s.deny_request(request_id, ALICE, "no")
    now[0] += 60
    s.prune()  # luigi: FAILED -> PENDING after retry_delay
    assert status(s, backfill_id()) == PENDING
    assert work(s, AGENT, "agent-w")["task_id"] is None


def test_deciding_is_refused_as_the_book_refuses() -> None:
    g = gated()
    s = g.scheduler
    request_id = held_backfill(g)
    with pytest.raises(ApprovalRefused) as info:
        s.approve_request(request_id, AGENT, "mine")
    assert info.value.status == 403
    with pytest.raises(ApprovalRefused) as info:
        s.approve_request("apr-000000000000", ALICE, "")
    assert info.value.status == 404
    assert g.audit.outcomes(request_id) == ["requested"]


def test_break_glass_releases_alone_and_is_audited_as_such() -> None:
    g = gated()
    s = g.scheduler
    request_id = held_backfill(g)
    approve(s, request_id, ROOT, break_glass=True)
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id()
    assert g.audit.outcomes(request_id) == ["requested", "break_glass", "approved", "run_started"]


# -- deadlines ------------------------------------------------------------------------------------


def test_an_undecided_request_expires_and_fails_its_task() -> None:
    g = gated({"prod-backfill": rule(request_expiry=3600.0)})
    s = g.scheduler
    request_id = held_backfill(g)
    g.clock.now += 3599
    assert work(s, AGENT, "agent-w")["task_id"] is None
    assert status(s, backfill_id()) == PENDING
    g.clock.now += 1
    assert work(s, AGENT, "agent-w")["task_id"] is None
    assert status(s, backfill_id()) == FAILED
    assert "no decision before the request expired" in s.fetch_error(backfill_id())["error"]
    assert g.audit.outcomes(request_id) == ["requested", "expired"]
    with pytest.raises(ApprovalRefused) as info:
        s.approve_request(request_id, ALICE, "")
    assert info.value.status == 409


def test_an_approval_expires_when_the_task_did_not_start() -> None:
    g = gated({"prod-backfill": rule(approvals=1, approval_expiry=600.0)})
    s = g.scheduler
    request_id = held_backfill(g)
    g.clock.now += 10_000  # no request expiry: only the approval's own deadline counts
    approve(s, request_id, ALICE)
    g.clock.now += 600
    s.prune()
    assert status(s, backfill_id()) == FAILED
    assert "did not start before the approval expired" in s.fetch_error(backfill_id())["error"]
    assert work(s, AGENT, "agent-w")["task_id"] is None
    assert g.audit.outcomes(request_id) == ["requested", "approval", "approved", "expired"]


def test_an_approval_used_in_time_does_not_expire() -> None:
    g = gated({"prod-backfill": rule(approvals=1, approval_expiry=600.0)})
    s = g.scheduler
    request_id = held_backfill(g)
    approve(s, request_id, ALICE)
    g.clock.now += 599
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id()
    g.clock.now += 10_000
    s.prune()
    assert status(s, backfill_id()) == RUNNING
    assert request_of(s, request_id).state == "approved"


# -- who and what is gated ------------------------------------------------------------------------


def test_a_person_the_rule_does_not_name_is_not_gated() -> None:
    g = gated()
    s = g.scheduler
    assert add(s, PERSON, "pat-w", backfill_id()) is None
    assert work(s, PERSON, "pat-w")["task_id"] == backfill_id()
    assert len(book(s)) == 0


def test_other_parameters_and_families_are_not_gated() -> None:
    g = gated()
    s = g.scheduler
    assert add(s, AGENT, "agent-w", backfill_id("dev"), params={"env": "dev"}) is None
    assert add(s, AGENT, "agent-w", "Report_prod", family="Report") is None
    assert {work(s, AGENT, "agent-w")["task_id"] for _ in range(2)} == {backfill_id("dev"), "Report_prod"}


def test_outside_a_request_nothing_is_gated() -> None:
    g = gated()
    s = g.scheduler
    assert s.add_task(worker="internal", task_id=backfill_id(), family=BACKFILL, params=PROD) is None
    assert s.get_work(worker="internal")["task_id"] == backfill_id()


def test_propose_only_gates_without_any_rule() -> None:
    settings = ApprovalsSettings(agents=(Selector("user", "copilot"),), propose_only=(Selector("kind", "agent"),))
    g = gated({}, settings)
    s = g.scheduler
    answer = add(s, AGENT, "agent-w", "Anything_1", family="Anything", params={})
    assert isinstance(answer, dict)
    request = book(s).get(answer["approval_request"])
    assert request is not None and request.missing() == ["1 more from role:operator (propose-only)"]
    assert work(s, AGENT, "agent-w")["task_id"] is None
    assert add(s, PERSON, "pat-w", "Other_1", family="Other", params={}) is None  # a person: not propose-only
    approve(s, request.id, CAROL)
    assert {work(s, AGENT, "agent-w")["task_id"], work(s, PERSON, "pat-w")["task_id"]} == {"Anything_1", "Other_1"}


def test_a_resubmission_with_other_declared_params_is_judged_on_the_recorded_ones() -> None:
    g = gated({"prod-backfill": rule(requesters=())})
    s = g.scheduler
    assert add(s, PERSON, "pat-w", backfill_id(), params={"env": "dev"}) is None  # recorded: env=dev
    # The same id declaring env=prod: luigi keeps the recorded params, so the rule on them decides.
    assert add(s, PERSON, "pat-w", backfill_id(), params={"env": "prod"}) is None


# -- gated operator actions -----------------------------------------------------------------------


def failed_after_an_approved_run(g: Gated, ends: str = FAILED) -> str:
    s = g.scheduler
    request_id = held_backfill(g)
    approve(s, request_id, ALICE, BOB)
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id()
    add(s, AGENT, "agent-w", backfill_id(), status=FAILED, expl="boom")
    assert status(s, backfill_id()) == ends
    assert g.audit.outcomes(request_id)[-1] == "run_failed"
    return request_id


def test_a_gated_forgive_failures_is_a_request_applied_on_approval() -> None:
    g = gated()
    s = g.scheduler
    failed_after_an_approved_run(g)
    with calling(AGENT):
        answer = s.forgive_failures(task_id=backfill_id())
    assert answer["status"] == FAILED and answer["approval_request"].startswith("apr-")
    assert status(s, backfill_id()) == FAILED
    with calling(AGENT):
        assert s.forgive_failures(task_id=backfill_id())["approval_request"] == answer["approval_request"]
    request = approve(s, answer["approval_request"], ALICE, BOB)
    assert request.state == "done" and request.action == "forgive_failures"
    assert status(s, backfill_id()) == PENDING
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id()
    assert g.audit.outcomes(request.id) == ["requested", "approval", "approval", "approved", "applied"]


def test_a_gated_mark_as_done_is_a_request_applied_on_approval() -> None:
    g = gated()
    s = g.scheduler
    failed_after_an_approved_run(g)
    with calling(AGENT):
        answer = s.mark_as_done(task_id=backfill_id())
    assert "approval_request" in answer and status(s, backfill_id()) == FAILED
    approve(s, answer["approval_request"], ALICE, BOB)
    assert status(s, backfill_id()) == DONE


def test_a_gated_re_enable_task_is_a_request_applied_on_approval() -> None:
    g = gated(retry_count=1)
    s = g.scheduler
    failed_after_an_approved_run(g, DISABLED)  # one failure is excessive here
    with calling(AGENT):
        answer = s.re_enable_task(task_id=backfill_id())
    assert "approval_request" in answer and status(s, backfill_id()) == DISABLED
    approve(s, answer["approval_request"], ALICE, BOB)
    assert status(s, backfill_id()) == FAILED  # luigi's re-enable: failed, retried in time


def test_a_person_the_rule_does_not_name_forgives_at_once() -> None:
    g = gated()
    s = g.scheduler
    failed_after_an_approved_run(g)
    with calling(PERSON):
        answer = s.forgive_failures(task_id=backfill_id())
    assert "approval_request" not in answer and status(s, backfill_id()) == PENDING


def test_a_resubmission_after_a_successful_run_is_a_new_request() -> None:
    g = gated()
    s = g.scheduler
    first = held_backfill(g)
    approve(s, first, ALICE, BOB)
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id()
    add(s, AGENT, "agent-w", backfill_id(), status=DONE)
    record(s, backfill_id()).updated -= 3600  # past luigi's stable_done_cooldown_secs
    second = held_backfill(g)
    assert second != first
    assert work(s, AGENT, "agent-w")["task_id"] is None


# -- reports of a worker that was never handed the task --------------------------------------------


@pytest.mark.parametrize("reported", [RUNNING, DONE, DISABLED])
def test_a_held_task_reported_by_a_worker_is_refused(reported: str) -> None:
    g = gated()
    s = g.scheduler
    request_id = held_backfill(g)
    reason = s.approval_refusal(AGENT, "add_task", {"task_id": backfill_id(), "status": reported,
                                                    "worker": "agent-w"})
    assert reason is not None and request_id in reason and "awaits approval" in reason
    assert s.approval_refusal(AGENT, "add_task", {"task_id": backfill_id(), "status": PENDING}) is None
    assert s.approval_refusal(AGENT, "add_task", {"task_id": "Other", "status": DONE}) is None
    assert s.approval_refusal(AGENT, "get_work", {"worker": "agent-w"}) is None
    with calling(ALICE):
        s.deny_request(request_id, ALICE, "no")
    denied = s.approval_refusal(AGENT, "add_task", {"task_id": backfill_id(), "status": reported})
    assert denied is not None and "was denied" in denied
    approved = held_backfill(g, backfill_id(day="2"), {"env": "prod", "day": "2"})
    approve(s, approved, ALICE, BOB)
    assert s.approval_refusal(AGENT, "add_task", {"task_id": backfill_id(day="2"), "status": reported}) is None


def test_without_approvals_there_is_no_refusal_and_no_gate() -> None:
    s = Scheduler()
    assert s.approvals is None
    with calling(AGENT):
        assert s.add_task(worker="agent-w", task_id=backfill_id(), family=BACKFILL, params=PROD) is None
    assert s.approval_refusal(AGENT, "add_task", {"task_id": backfill_id(), "status": DONE}) is None
    with pytest.raises(ApprovalRefused) as info:
        s.approve_request("apr-1", ALICE, "")
    assert info.value.status == 404
    assert s.export_approvals() is None


# -- the snapshot ---------------------------------------------------------------------------------


def snapshot_of(scheduler: Scheduler) -> state.Snapshot:
    payload = pickle.loads(pickle.dumps(state.capture(scheduler, {"agent-w": "copilot"}, 3)))  # noqa: S301
    decoded = state.decode(payload)
    assert isinstance(decoded, state.Snapshot), decoded
    return decoded


def test_a_restored_scheduler_keeps_the_request_pending_and_the_task_held() -> None:
    g = gated({"prod-backfill": rule(request_expiry=3600.0)})
    request_id = held_backfill(g)
    approve(g.scheduler, request_id, ALICE)
    snapshot = snapshot_of(g.scheduler)
    assert snapshot.approvals is not None and snapshot.generation == 3
    fresh = gated({"prod-backfill": rule(request_expiry=3600.0)})
    fresh.clock.now = g.clock.now
    s = fresh.scheduler
    state.restore(s, snapshot)
    request = book(s).get(request_id)
    assert request is not None and request.state == "pending" and request.approvers == ["alice"]
    assert status(s, backfill_id()) == PENDING
    assert work(s, AGENT, "agent-w")["task_id"] is None
    assert work(s, CAROL, "assistant-w", assistant=True)["task_id"] is None
    assert s.approval_refusal(AGENT, "add_task", {"task_id": backfill_id(), "status": DONE}) is not None
    # Re-submitted after the restart (the worker still waits): the same request, not a new one.
    assert add(s, AGENT, "agent-w", backfill_id())["approval_request"] == request_id
    with pytest.raises(ApprovalRefused):
        s.approve_request(request_id, ALICE, "again")
    approve(s, request_id, BOB)
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id()


def test_the_restored_deadline_still_expires_the_request() -> None:
    g = gated({"prod-backfill": rule(request_expiry=3600.0)})
    held_backfill(g)
    fresh = gated({"prod-backfill": rule(request_expiry=3600.0)})
    fresh.clock.now = g.clock.now + 3600
    state.restore(fresh.scheduler, snapshot_of(g.scheduler))
    assert work(fresh.scheduler, AGENT, "agent-w")["task_id"] is None
    assert status(fresh.scheduler, backfill_id()) == FAILED


def test_pending_requests_refuse_a_scheduler_without_approvals() -> None:
    g = gated()
    held_backfill(g)
    with pytest.raises(StateError, match="pending approval requests"):
        state.restore(Scheduler(), snapshot_of(g.scheduler))


def test_ended_requests_restore_into_a_scheduler_without_approvals() -> None:
    g = gated({"prod-backfill": rule(approvals=1)})
    request_id = held_backfill(g)
    approve(g.scheduler, request_id, ALICE)
    plain = Scheduler()
    state.restore(plain, snapshot_of(g.scheduler))
    assert plain.task_record(backfill_id()) is not None


def test_denied_requests_refuse_a_scheduler_without_approvals() -> None:
    g = gated()
    request_id = held_backfill(g)
    with calling(ALICE):
        g.scheduler.deny_request(request_id, ALICE, "no")
    with pytest.raises(StateError):
        state.restore(Scheduler(), snapshot_of(g.scheduler))


def corrupt(snapshot: state.Snapshot, approvals: Any) -> state.Snapshot:
    return state.Snapshot(snapshot.generation, snapshot.luigi_state, snapshot.worker_bindings, approvals)


@pytest.mark.parametrize("approvals", [
    {"format": 99, "requests": [], "current": {}},
    {"format": 1, "requests": [{"id": "apr-1"}], "current": {}},
    {"format": 1, "requests": [], "current": {"Backfill_prod_1": "apr-gone"}},
], ids=["format", "request", "current"])
def test_a_corrupt_approvals_part_refuses_to_start(approvals: Any) -> None:
    g = gated()
    held_backfill(g)
    fresh = gated()
    with pytest.raises(StateError, match="cannot restore the approval requests"):
        state.restore(fresh.scheduler, corrupt(snapshot_of(g.scheduler), approvals))
    assert fresh.scheduler.task_record(backfill_id()) is None  # nothing installed


@pytest.mark.parametrize("with_rules", [True, False], ids=["with-rules", "without-rules"])
def test_an_approvals_part_of_the_wrong_shape_refuses_to_start(with_rules: bool) -> None:
    g = gated()
    held_backfill(g)
    target = gated().scheduler if with_rules else Scheduler()
    with pytest.raises(StateError):
        state.restore(target, corrupt(snapshot_of(g.scheduler), {"format": 1, "requests": ["apr-1"] if not with_rules
                                                                  else 5, "current": {}}))


def test_decode_refuses_an_approvals_part_that_is_no_mapping() -> None:
    g = gated()
    held_backfill(g)
    payload = state.capture(g.scheduler, {}, 1)
    payload["approvals"] = ["not", "a", "book"]
    assert isinstance(state.decode(payload), str)


def test_a_scheduler_without_approvals_writes_no_approvals_part() -> None:
    assert "approvals" not in state.capture(Scheduler(), {}, 1)


def approved_batch(g: Gated) -> tuple[list[str], Any]:
    s = g.scheduler
    requests = [held_backfill(g, backfill_id(day=day), {"env": "prod", "day": day}, batchable=True)
                for day in ("1", "2")]
    with calling(AGENT):
        s.add_task_batcher(worker="agent-w", task_family=BACKFILL, batched_args=["day"], max_batch_size=10)
    for request_id in requests:
        approve(s, request_id, ALICE, BOB)
    reply = work(s, AGENT, "agent-w")
    assert reply["batch_task_ids"] == [backfill_id(day="1"), backfill_id(day="2")]
    return requests, reply


def test_a_held_task_is_never_part_of_a_batch() -> None:
    g = gated()
    s = g.scheduler
    approved = held_backfill(g, backfill_id(day="1"), {"env": "prod", "day": "1"})
    held_backfill(g, backfill_id(day="2"), {"env": "prod", "day": "2"})
    for task_id in (backfill_id(day="1"), backfill_id(day="2")):
        record(s, task_id).batchable = True
    with calling(AGENT):
        s.add_task_batcher(worker="agent-w", task_family=BACKFILL, batched_args=["day"], max_batch_size=10)
    approve(s, approved, ALICE, BOB)
    reply = work(s, AGENT, "agent-w")
    assert reply["task_id"] == backfill_id(day="1") and "batch_task_ids" not in reply
    assert status(s, backfill_id(day="2")) == PENDING


def test_the_batched_run_of_approved_tasks_is_reported_and_keeps_its_approval() -> None:
    g = gated({"prod-backfill": rule(approval_expiry=600.0)})
    s = g.scheduler
    requests, reply = approved_batch(g)
    with calling(AGENT):
        s.add_task(worker="agent-w", task_id="Backfill_prod_1_2", family=BACKFILL, params={"env": "prod", "day": "1,2"},
                   status=RUNNING, batch_id=reply["batch_id"])
    g.clock.now += 601
    s.prune()
    assert [status(s, backfill_id(day=day)) for day in ("1", "2")] == [BATCH_RUNNING, BATCH_RUNNING]
    for request_id in requests:
        # Once: get_work starts the members, the combined task's report is the same run.
        assert g.audit.outcomes(request_id)[-3:] == ["approval", "approved", "run_started"]
        assert g.audit.outcomes(request_id).count("run_started") == 1


def test_the_combined_task_of_a_handed_out_batch_may_be_reported_running() -> None:
    """luigi's worker reports a batch under a new combined id: not a gated new task."""
    g = gated()
    s = g.scheduler
    _, reply = approved_batch(g)
    combined = {"task_id": "Backfill_prod_1_2", "family": BACKFILL, "params": {"env": "prod", "day": "1,2"},
                "status": RUNNING, "batch_id": reply["batch_id"], "worker": "agent-w"}
    assert s.approval_refusal(AGENT, "add_task", combined) is None
    assert s.approval_refusal(AGENT, "add_task", {**combined, "batch_id": "no-such-batch"}) is not None


# -- submissions that must not dodge the gate -------------------------------------------------------


def test_a_suspended_report_of_a_new_task_is_gated_like_pending() -> None:
    g = gated()
    s = g.scheduler
    answer = add(s, AGENT, "agent-w", backfill_id(), status=SUSPENDED)
    assert status(s, backfill_id()) == PENDING
    assert work(s, AGENT, "agent-w")["task_id"] is None
    assert isinstance(answer, dict) and "approval_request" in answer


def test_a_task_reported_disabled_then_pending_is_gated() -> None:
    g = gated()
    s = g.scheduler
    assert s.approval_refusal(AGENT, "add_task", {"task_id": backfill_id(), "status": DISABLED}) is None
    add(s, AGENT, "agent-w", backfill_id(), status=DISABLED)
    assert status(s, backfill_id()) == DISABLED
    answer = add(s, AGENT, "agent-w", backfill_id())
    assert status(s, backfill_id()) == PENDING
    assert work(s, AGENT, "agent-w")["task_id"] is None
    assert isinstance(answer, dict) and "approval_request" in answer


def test_marking_an_approved_task_done_is_not_audited_as_its_run() -> None:
    g = gated()
    s = g.scheduler
    request_id = held_backfill(g)
    approve(s, request_id, ALICE, BOB)
    with calling(PERSON):  # not gated: applies at once
        s.mark_as_done(task_id=backfill_id())
    assert status(s, backfill_id()) == PENDING  # luigi marks only RUNNING, FAILED, DISABLED
    assert work(s, AGENT, "agent-w")["task_id"] == backfill_id()
    add(s, AGENT, "agent-w", backfill_id(), status=FAILED, expl="boom")
    with calling(PERSON):
        s.mark_as_done(task_id=backfill_id())
    assert status(s, backfill_id()) == DONE
    assert g.audit.outcomes(request_id)[-2:] == ["run_started", "run_failed"]


@pytest.mark.parametrize("reported", [FAILED, UNKNOWN])
def test_a_held_task_reported_failed_or_unknown_is_not_refused(reported: str) -> None:
    """A worker whose complete() raised reports UNKNOWN, a scheduling failure FAILED: nothing
    runs, so its whole add_tasks batch is not refused for it, and the task stays held."""
    g = gated()
    s = g.scheduler
    held_backfill(g)
    assert s.approval_refusal(AGENT, "add_task", {"task_id": backfill_id(), "status": reported}) is None
    add(s, AGENT, "agent-w", backfill_id(), status=reported)
    assert book(s).holds(backfill_id())


@pytest.mark.parametrize("reported", [RUNNING, DISABLED])
def test_a_new_gated_task_reported_running_or_disabled_is_refused(reported: str) -> None:
    """A luigi worker submits a task PENDING before anything else; reporting a gated one running
    (or disabled, to have it PENDING later without a request) first is refused."""
    g = gated()
    s = g.scheduler
    arguments = {"task_id": backfill_id(), "status": reported, "family": BACKFILL, "params": PROD}
    reason = s.approval_refusal(AGENT, "add_task", arguments)
    assert reason is not None and "must be submitted (PENDING) and approved" in reason
    assert s.approval_refusal(PERSON, "add_task", arguments) is None  # no rule gates a person here
    assert s.approval_refusal(AGENT, "add_task", {**arguments, "status": DONE}) is None  # ran nothing here


def test_a_failed_approved_run_submitted_again_is_a_new_request() -> None:
    """luigi's own retry (prune, after retry_delay) runs under the approval; a worker submitting
    the FAILED task again, whenever that is, asks for a new run."""
    g = gated()
    s = g.scheduler
    first = failed_after_an_approved_run(g)
    second = held_backfill(g)
    assert second != first
    assert work(s, AGENT, "agent-w")["task_id"] is None


def test_re_enable_of_a_task_the_scheduler_did_not_disable_opens_no_request() -> None:
    g = gated()
    s = g.scheduler
    failed_after_an_approved_run(g)
    s.record_status(record(s, backfill_id()), DISABLED)  # as a worker's DISABLED report does: no disable time
    assert record(s, backfill_id()).scheduler_disable_time is None
    with calling(AGENT):
        answer = s.re_enable_task(task_id=backfill_id())
    assert "approval_request" not in (answer or {})


def test_a_failed_gated_task_reported_done_is_refused_where_mark_as_done_is_gated() -> None:
    g = gated()
    s = g.scheduler
    failed_after_an_approved_run(g)
    reason = s.approval_refusal(AGENT, "add_task", {"task_id": backfill_id(), "status": DONE})
    assert reason is not None and "mark_as_done" in reason
    assert s.approval_refusal(PERSON, "add_task", {"task_id": backfill_id(), "status": DONE}) is None
    g2 = gated({"prod-backfill": rule(actions=("add_task",))})
    failed_after_an_approved_run(g2)
    assert g2.scheduler.approval_refusal(AGENT, "add_task", {"task_id": backfill_id(), "status": DONE}) is None


def test_an_add_tasks_batch_cannot_submit_a_gated_task_and_report_it_done() -> None:
    from luigi_appliance.server.rpc_access import RpcAccess

    g = gated()
    access = RpcAccess().attach(g.scheduler)
    submit = {"task_id": backfill_id(), "family": BACKFILL, "params": PROD, "status": PENDING}
    refused = access.batch_refusal(AGENT, "agent-w", [submit, {**submit, "status": DONE}])
    assert refused is not None and refused[0] == 1 and "awaits approval" in refused[1]
    assert access.batch_refusal(PERSON, "pat-w", [submit, {**submit, "status": DONE}]) is None


@pytest.mark.parametrize("decider", ["agent", "propose-only"])
def test_agents_and_propose_only_principals_never_decide(decider: str) -> None:
    helper = Principal("helper-bot", Role.ADMIN, "local", frozenset({"data-owners"}))
    settings = ApprovalsSettings(agents=(Selector("user", "copilot"),) + ((Selector("user", "helper-bot"),)
                                                                        if decider == "agent" else ()),
                                 propose_only=(Selector("user", "helper-bot"),) if decider == "propose-only" else ())
    g = gated(settings=settings)
    s = g.scheduler
    request_id = held_backfill(g)
    for break_glass in (False, True):
        with calling(helper), pytest.raises(ApprovalRefused, match=r"may not decide|may only propose") as refused:
            s.approve_request(request_id, helper, "ok", break_glass=break_glass)
        assert refused.value.status == 403
    with calling(helper), pytest.raises(ApprovalRefused):
        s.deny_request(request_id, helper, "no")
    with calling(helper), pytest.raises(ApprovalRefused) as unknown:
        s.approve_request("apr-000000000000", helper, "ok")
    assert unknown.value.status == 404
    assert request_of(s, request_id).state == "pending"
    with calling(AGENT):
        s.deny_request(request_id, AGENT, "withdrawn")  # the requester may withdraw, agent or not
    assert request_of(s, request_id).state == "denied"


def test_a_requester_cannot_forgive_their_way_past_a_refusal() -> None:
    """A rule that gates only add_task: the requester's ungated forgive_failures still applies,
    but the refused request keeps holding the task; a principal no rule gates releases it."""
    operator_agent = Principal("copilot", Role.OPERATOR, "local")
    g = gated({"prod-backfill": rule(actions=("add_task",))})
    s = g.scheduler
    request_id = held_backfill(g)
    with calling(ALICE):
        s.deny_request(request_id, ALICE, "no")
    assert status(s, backfill_id()) == FAILED
    with calling(operator_agent):
        s.forgive_failures(task_id=backfill_id())
    assert status(s, backfill_id()) == PENDING and book(s).holds(backfill_id())
    assert work(s, AGENT, "agent-w")["task_id"] is None
    s.record_status(record(s, backfill_id()), FAILED)
    with calling(CAROL):
        s.forgive_failures(task_id=backfill_id())
    assert not book(s).holds(backfill_id())

