"""The approval book (luigi_appliance/approvals/book.py) driven directly: who may approve and deny,
what counts, deadlines, and the snapshot export it must survive."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from luigi_appliance.approvals.book import (
    APPROVED,
    DENIED,
    DONE,
    EXPIRED,
    PENDING,
    ApprovalBook,
    ApprovalRefused,
    ApprovalRequest,
    Requirement,
)
from luigi_appliance.approvals.selectors import Kind, Selector
from luigi_appliance.auth import Principal, Role

T0 = 1_000_000.0
OWNERS = Requirement("prod-backfill", 2, (Selector("group", "data-owners"),))
OPERATORS = Requirement("ops", 1, (Selector("role", "operator"),))


def person(name: str, role: Role = Role.WORKER, *groups: str) -> Principal:
    return Principal(name, role, "local", frozenset(groups))


AGENT = person("copilot", Role.WORKER, "ai-agents")
ALICE = person("alice", Role.VIEWER, "data-owners")
BOB = person("bob", Role.VIEWER, "data-owners")
CAROL = person("carol", Role.OPERATOR)
ROOT = person("root", Role.ADMIN)
MALLORY = person("mallory", Role.OPERATOR, "interns")


def open_request(book: ApprovalBook, *requirements: Requirement, task_id: str = "Backfill_prod_1",
                 action: str = "add_task", requester: Principal = AGENT, request_expiry: float = 0.0,
                 approval_expiry: float = 0.0, now: float = T0) -> ApprovalRequest:
    return book.open(task_id=task_id, family="Backfill", params={"env": "prod"}, action=action,
                     requester=requester, kind=Kind.AGENT, requirements=requirements or (OWNERS,), now=now,
                     request_expiry=request_expiry, approval_expiry=approval_expiry)


def refused(call: Any, *args: Any, **kwargs: Any) -> ApprovalRefused:
    with pytest.raises(ApprovalRefused) as info:
        call(*args, **kwargs)
    return info.value


# -- approvals ----------------------------------------------------------------------------------


def test_two_distinct_approvers_approve_and_the_task_is_released() -> None:
    book = ApprovalBook()
    request = open_request(book)
    assert book.holds(request.task_id)
    assert request.missing() == ["2 more from group:data-owners (prod-backfill)"]
    book.approve(request.id, ALICE, "looks right", T0 + 1)
    assert request.state == PENDING and book.holds(request.task_id)
    assert request.missing() == ["1 more from group:data-owners (prod-backfill)"]
    assert "Awaiting approval" in request.summary() and "copilot (agent)" in request.summary()
    book.approve(request.id, BOB, None, T0 + 2)
    assert request.state == APPROVED and request.decided == T0 + 2
    assert request.approvers == ["alice", "bob"]
    assert not book.holds(request.task_id)
    assert request.missing() == []
    assert request.summary() == f"Approved ({request.id}) by alice, bob"


def test_the_requester_may_not_approve_their_own_request() -> None:
    book = ApprovalBook()
    owner_agent = person("copilot", Role.ADMIN, "data-owners")
    request = open_request(book, requester=owner_agent)
    exc = refused(book.approve, request.id, owner_agent, "mine", T0)
    assert exc.status == 403 and "may not approve" in str(exc)
    assert request.approvals == [] and request.state == PENDING


def test_the_same_approver_counts_once() -> None:
    book = ApprovalBook()
    request = open_request(book)
    book.approve(request.id, ALICE, "", T0)
    exc = refused(book.approve, request.id, ALICE, "again", T0 + 1)
    assert exc.status == 409 and "counts once" in str(exc)
    # Another principal object with the same name (another session, another backend) is the same person.
    exc = refused(book.approve, request.id, person("alice", Role.ADMIN, "data-owners"), "", T0 + 2)
    assert exc.status == 409
    assert request.state == PENDING and request.approvers == ["alice"]


def test_a_principal_no_requirement_names_is_refused() -> None:
    book = ApprovalBook()
    request = open_request(book)
    exc = refused(book.approve, request.id, MALLORY, "let me", T0)
    assert exc.status == 403 and "not among the approvers" in str(exc) and "group:data-owners" in str(exc)
    # An administrator without the group is no approver either (only break-glass lets them).
    refused(book.approve, request.id, ROOT, "", T0)
    assert request.approvals == []


def test_several_requirements_must_all_be_met() -> None:
    book = ApprovalBook()
    request = open_request(book, OWNERS, OPERATORS)
    book.approve(request.id, CAROL, "", T0)
    assert request.state == PENDING and request.missing() == ["2 more from group:data-owners (prod-backfill)"]
    book.approve(request.id, ALICE, "", T0)
    assert request.state == PENDING
    book.approve(request.id, BOB, "", T0)
    assert request.state == APPROVED


def test_one_approver_meeting_two_requirements_counts_for_both_but_is_still_one_person() -> None:
    book = ApprovalBook()
    both = person("dora", Role.OPERATOR, "data-owners")
    request = open_request(book, OWNERS, OPERATORS)
    book.approve(request.id, both, "", T0)
    assert request.approvals[0].counted_for == ("prod-backfill", "ops")
    assert request.missing() == ["1 more from group:data-owners (prod-backfill)"]
    book.approve(request.id, ALICE, "", T0)
    assert request.state == APPROVED


def test_a_decided_or_unknown_request_cannot_be_approved() -> None:
    book = ApprovalBook()
    request = open_request(book, OPERATORS)
    book.approve(request.id, CAROL, "", T0)
    assert refused(book.approve, request.id, person("dave", Role.OPERATOR), "", T0).status == 409
    assert refused(book.approve, "apr-nonesuch", CAROL, "", T0).status == 404
    assert refused(book.approve, ["not", "an", "id"], CAROL, "", T0).status == 404
    assert refused(book.deny, request.id, CAROL, "too late", T0).status == 409


def test_comments_must_be_text_and_bounded() -> None:
    book = ApprovalBook()
    request = open_request(book)
    assert refused(book.approve, request.id, ALICE, 42, T0).status == 400
    assert refused(book.approve, request.id, ALICE, "x" * 2001, T0).status == 400
    assert request.approvals == []
    book.approve(request.id, ALICE, "  fine  ", T0)
    assert request.approvals[0].comment == "fine"


# -- break-glass --------------------------------------------------------------------------------


def test_break_glass_lets_an_admin_approve_alone_with_a_reason() -> None:
    book = ApprovalBook()
    request = open_request(book, OWNERS, OPERATORS)
    book.approve(request.id, ROOT, "prod is down, owners unreachable", T0, break_glass=True)
    assert request.state == APPROVED
    decision = request.approvals[0]
    assert decision.break_glass and decision.principal == "root"
    assert decision.comment == "prod is down, owners unreachable"
    assert decision.counted_for == ("prod-backfill", "ops")


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_break_glass_needs_a_reason(reason: Any) -> None:
    book = ApprovalBook()
    request = open_request(book)
    exc = refused(book.approve, request.id, ROOT, reason, T0, break_glass=True)
    assert exc.status == 400 and "break-glass reason" in str(exc)
    assert request.state == PENDING and request.approvals == []


@pytest.mark.parametrize("who", [CAROL, ALICE, MALLORY])
def test_break_glass_is_for_administrators_only(who: Principal) -> None:
    book = ApprovalBook()
    request = open_request(book)
    exc = refused(book.approve, request.id, who, "urgent", T0, break_glass=True)
    assert exc.status == 403 and "admin" in str(exc)
    assert request.state == PENDING and request.approvals == []


def test_break_glass_never_lets_the_requester_approve() -> None:
    book = ApprovalBook()
    admin_requester = person("ops-bot", Role.ADMIN)
    request = open_request(book, requester=admin_requester)
    exc = refused(book.approve, request.id, admin_requester, "I know what I do", T0, break_glass=True)
    assert exc.status == 403
    assert request.state == PENDING


# -- denials ------------------------------------------------------------------------------------


@pytest.mark.parametrize("comment", [None, "", "  "])
def test_a_denial_needs_a_comment(comment: Any) -> None:
    book = ApprovalBook()
    request = open_request(book)
    exc = refused(book.deny, request.id, ALICE, comment, T0)
    assert exc.status == 400
    assert request.state == PENDING


def test_an_approver_denies_with_the_comment_as_reason_and_the_task_stays_held() -> None:
    book = ApprovalBook()
    request = open_request(book)
    book.approve(request.id, ALICE, "", T0)
    book.deny(request.id, BOB, "wrong partition", T0 + 5)
    assert request.state == DENIED and request.decided == T0 + 5
    assert request.denial is not None and request.denial.principal == "bob"
    assert request.reason == "denied by bob: wrong partition"
    assert request.summary() == f"Denied ({request.id}): denied by bob: wrong partition"
    assert book.holds(request.task_id)  # luigi's own retry must not run what was refused


def test_a_non_approver_may_not_deny_but_an_admin_may() -> None:
    book = ApprovalBook()
    request = open_request(book)
    assert refused(book.deny, request.id, MALLORY, "no", T0).status == 403
    assert request.state == PENDING
    book.deny(request.id, ROOT, "not this week", T0)
    assert request.state == DENIED


def test_the_requester_may_withdraw_by_denying() -> None:
    book = ApprovalBook()
    request = open_request(book)
    book.deny(request.id, AGENT, "submitted by mistake", T0)
    assert request.state == DENIED and request.reason == "denied by copilot: submitted by mistake"


def test_release_forgets_a_refused_request_but_never_a_pending_one() -> None:
    book = ApprovalBook()
    request = open_request(book)
    book.release(request.task_id)
    assert book.holds(request.task_id)
    book.deny(request.id, ALICE, "no", T0)
    book.release(request.task_id)
    assert not book.holds(request.task_id) and book.current(request.task_id) is None
    assert book.get(request.id) is request


# -- deadlines ----------------------------------------------------------------------------------


def test_a_pending_request_falls_due_at_its_expiry() -> None:
    book = ApprovalBook()
    request = open_request(book, request_expiry=60)
    open_request(book, task_id="other")  # no deadline: never due
    assert request.expires == T0 + 60
    assert book.next_deadline() == T0 + 60
    assert book.due(T0 + 59.9) == []
    assert book.due(T0 + 60) == [request]
    book.expire(request, T0 + 60)
    assert request.state == EXPIRED and request.reason == "no decision before the request expired"
    assert book.holds(request.task_id)
    assert book.due(T0 + 120) == [] and book.next_deadline() is None
    assert refused(book.approve, request.id, ALICE, "", T0 + 61).status == 409


def test_an_approval_not_used_in_time_expires_but_a_started_run_keeps_it() -> None:
    book = ApprovalBook()
    idle = open_request(book, OPERATORS, task_id="idle", approval_expiry=30)
    busy = open_request(book, OPERATORS, task_id="busy", approval_expiry=30)
    book.approve(idle.id, CAROL, "", T0 + 10)
    book.approve(busy.id, CAROL, "", T0 + 10)
    assert idle.valid_until == T0 + 40 and book.next_deadline() == T0 + 40
    assert book.run_reported("busy", "running") is busy and busy.started
    assert book.due(T0 + 39) == []
    assert book.due(T0 + 40) == [idle]
    book.expire(idle, T0 + 40)
    assert idle.state == EXPIRED and "did not start before the approval expired" in (idle.reason or "")
    assert book.holds("idle") and not book.holds("busy")


def test_an_action_request_is_done_once_approved() -> None:
    book = ApprovalBook()
    request = open_request(book, OPERATORS, action="forgive_failures", approval_expiry=30)
    assert book.current(request.task_id) is None  # only add_task requests hold a task
    assert book.pending_action(request.task_id, "forgive_failures", "copilot") is request
    book.approve(request.id, CAROL, "", T0)
    assert request.state == DONE and request.valid_until is None
    assert book.pending_action(request.task_id, "forgive_failures", "copilot") is None


def test_the_run_of_an_approved_task_is_recorded() -> None:
    book = ApprovalBook()
    request = open_request(book, OPERATORS)
    assert book.run_reported(request.task_id, "running") is None  # still pending: nothing ran
    book.approve(request.id, CAROL, "", T0)
    assert book.run_reported(request.task_id, "running") is request and request.outcome == "running"
    assert book.run_reported(request.task_id, "done") is request
    assert request.state == DONE and request.outcome == "done"
    assert book.run_reported(request.task_id, "done") is None


def test_discard_ended_keeps_pending_and_holding_requests() -> None:
    book = ApprovalBook()
    pending = open_request(book, task_id="p")
    denied = open_request(book, task_id="d")
    book.deny(denied.id, ALICE, "no", T0)
    done = open_request(book, OPERATORS, task_id="x")
    book.approve(done.id, CAROL, "", T0)
    book.run_reported("x", "done")
    assert book.discard_ended(T0 + 1, lambda task_id: task_id == "d") == 1
    assert book.get(pending.id) is pending and book.get(denied.id) is denied and book.get(done.id) is None
    assert book.discard_ended(T0 + 1, lambda task_id: False) == 1
    assert book.get(denied.id) is None and book.current("d") is None
    assert len(book) == 1


# -- the snapshot -------------------------------------------------------------------------------


def filled_book() -> ApprovalBook:
    book = ApprovalBook()
    pending = open_request(book, OWNERS, OPERATORS, task_id="a", request_expiry=3600, approval_expiry=60)
    book.approve(pending.id, ALICE, "half", T0 + 1)
    approved = open_request(book, OPERATORS, task_id="b", approval_expiry=60)
    book.approve(approved.id, ROOT, "urgent", T0 + 2, break_glass=True)
    denied = open_request(book, task_id="c")
    book.deny(denied.id, BOB, "no", T0 + 3)
    open_request(book, OPERATORS, task_id="a", action="mark_as_done")
    return book


def test_export_load_round_trip_through_pickle() -> None:
    book = filled_book()
    exported = book.export()
    restored = ApprovalBook()
    restored.load(pickle.loads(pickle.dumps(exported)))  # noqa: S301 - our own bytes
    assert restored.export() == exported
    for request in book.requests():
        again = restored.get(request.id)
        assert again is not None and again.as_dict() == request.as_dict()
        assert again.requirements == request.requirements
        assert again.approvals == request.approvals and again.denial == request.denial
    assert [r.id for r in restored.requests()] == [r.id for r in book.requests()]
    for task_id in ("a", "b", "c"):
        assert restored.holds(task_id) == book.holds(task_id)
    assert restored.next_deadline() == book.next_deadline()
    # The restored book decides as the old one would have.
    pending = restored.current("a")
    assert pending is not None
    assert refused(restored.approve, pending.id, ALICE, "", T0 + 5).status == 409
    restored.approve(pending.id, BOB, "", T0 + 5)
    restored.approve(pending.id, CAROL, "", T0 + 5)
    assert pending.state == APPROVED and pending.valid_until == T0 + 65


def test_export_is_plain_data() -> None:
    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    assert plain(filled_book().export())


def malformed_exports() -> list[tuple[str, Any]]:
    good = filled_book().export()
    cases: list[tuple[str, Any]] = [("not a dict", ["requests"]), ("no format", {"requests": []}),
                                    ("another format", {**good, "format": 2})]

    def variant(name: str, change: Any) -> None:
        data = copy.deepcopy(good)
        change(data)
        cases.append((name, data))

    variant("current names an unknown request", lambda d: d["current"].update(z="apr-nonesuch"))
    variant("current is a list", lambda d: d.update(current=["a"]))
    variant("a request lacks its requirements", lambda d: d["requests"][0].pop("requirements"))
    variant("an unknown field", lambda d: d["requests"][0].update(colour="red"))
    variant("an unknown state", lambda d: d["requests"][0].update(state="maybe"))
    variant("an approver selector that is not one", lambda d: d["requests"][0]["requirements"][0].update(
        approvers=["wizard:merlin"]))
    variant("an approval count that is not a number",
            lambda d: d["requests"][0]["requirements"][0].update(approvals="many"))
    variant("a decision with unknown fields", lambda d: d["requests"][0]["approvals"][0].update(mood="meh"))
    variant("a request that is not a mapping", lambda d: d["requests"].append("apr-1"))
    return cases


@pytest.mark.parametrize(("name", "data"), malformed_exports(), ids=[c[0] for c in malformed_exports()])
def test_load_refuses_malformed_data_and_keeps_the_book(name: str, data: Any) -> None:
    book = filled_book()
    before = book.export()
    with pytest.raises(ValueError, match="approval request"):
        book.load(data)
    assert book.export() == before


@pytest.mark.parametrize("data", [{"format": 1, "requests": 7, "current": {}},
                                  {"format": 1, "requests": None, "current": {}},
                                  {"format": 1, "requests": [], "current": {"a": ["apr-1"]}}],
                         ids=["requests-int", "requests-none", "current-unhashable"])
def test_load_refuses_wrong_container_types_with_value_error(data: Any) -> None:
    with pytest.raises(ValueError, match="approval request"):
        ApprovalBook().load(data)
