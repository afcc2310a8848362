"""The approval requests and their decisions: what is pending, who approved, what is missing.

Pure bookkeeping, no I/O and no clock of its own (``now`` is passed in), so the scheduler's
snapshot holds it whole (``export``/``load``) and the tests drive it directly. A request binds to
one task id (family and parameters) and one requester; a changed parameter is another task id,
hence another request.

States: ``pending`` until enough distinct eligible principals approved (``approved``), one denied
(``denied``) or its deadline passed (``expired``); an approved ``add_task`` request ends ``done``
when its task ran to DONE, and ``expired`` if the task did not start before the approval's own
deadline. A pending, denied or expired ``add_task`` request holds its task back from get_work.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from luigi_appliance.approvals.selectors import Kind, Selector, any_matches, describe, parse_selector
from luigi_appliance.auth import Principal, Role

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
EXPIRED = "expired"
DONE = "done"
STATES = (PENDING, APPROVED, DENIED, EXPIRED, DONE)
# Comments and reasons are shown in pages and logs: bounded.
MAX_COMMENT = 2000
EXPORT_FORMAT = 1
# Ended requests stay listed (and in the snapshot) this long, then only the audit trail has them.
KEEP_ENDED = 30 * 86400


class ApprovalRefused(Exception):
    """A decision the book does not take; the message says why (shown to the caller as is)."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Requirement:
    """``approvals`` distinct principals matching ``approvers``, from rule ``rule``."""

    rule: str
    approvals: int
    approvers: tuple[Selector, ...]

    def describe(self) -> str:
        return f"{self.approvals} from {describe(self.approvers)} ({self.rule})"


@dataclass(frozen=True)
class Decision:
    principal: str
    at: float
    comment: str
    break_glass: bool = False
    # What the principal's identity met, for the record: "group:data-owners (prod-backfill)".
    counted_for: tuple[str, ...] = ()


@dataclass
class ApprovalRequest:
    """One request to run (or re-run) one task."""

    id: str
    task_id: str
    family: str
    params: dict[str, str]
    action: str
    requester: str
    requester_kind: str
    requirements: tuple[Requirement, ...]
    created: float
    expires: float | None = None  # the request's deadline for a decision
    approval_expiry: float = 0.0  # seconds an approval stays valid before the task starts
    state: str = PENDING
    approvals: list[Decision] = field(default_factory=list)
    denial: Decision | None = None
    decided: float | None = None
    valid_until: float | None = None  # approved add_task: start by then
    started: bool = False
    outcome: str | None = None  # the run: "running", "done", "failed"
    reason: str | None = None  # why it ended (denied, expired)

    @property
    def approvers(self) -> list[str]:
        return [d.principal for d in self.approvals]

    def missing(self) -> list[str]:
        """What each requirement still lacks, e.g. ``1 more from group:data-owners (prod)``."""
        if self.state != PENDING:
            return []
        out = []
        for req in self.requirements:
            have = sum(1 for d in self.approvals if req.rule in d.counted_for)
            if have < req.approvals:
                out.append(f"{req.approvals - have} more from {describe(req.approvers)} ({req.rule})")
        return out

    def summary(self) -> str:
        """One line for the task's status message, the worker's log and the notification."""
        if self.state == PENDING:
            return (f"Awaiting approval ({self.id}): requested by {self.requester} ({self.requester_kind}); "
                    f"needs {'; '.join(self.missing())}")
        if self.state == APPROVED:
            return f"Approved ({self.id}) by {', '.join(self.approvers)}"
        if self.state == DONE:
            return f"Approved ({self.id}) by {', '.join(self.approvers)}; ran"
        return f"{self.state.capitalize()} ({self.id}): {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        """The request as the API, the page and the audit show it."""
        return {**_export_request(self), "missing": self.missing(), "summary": self.summary()}


def _comment(text: Any, what: str, required: bool) -> str:
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ApprovalRefused(f"the {what} must be text", 400)
    text = text.strip()
    if required and not text:
        raise ApprovalRefused(f"a {what} is required", 400)
    if len(text) > MAX_COMMENT:
        raise ApprovalRefused(f"the {what} is longer than {MAX_COMMENT} characters", 400)
    return text


class ApprovalBook:
    """Every request this scheduler knows, by id, and the one current per task id."""

    def __init__(self) -> None:
        self._requests: dict[str, ApprovalRequest] = {}
        self._current: dict[str, str] = {}  # task id -> id of its latest add_task request

    def __len__(self) -> int:
        return len(self._requests)

    def get(self, request_id: str) -> ApprovalRequest | None:
        return self._requests.get(request_id)

    def current(self, task_id: str) -> ApprovalRequest | None:
        """The latest add_task request of ``task_id``, whatever its state."""
        request_id = self._current.get(task_id)
        return None if request_id is None else self._requests.get(request_id)

    def holds(self, task_id: str) -> bool:
        """Whether get_work must not hand out ``task_id``: its latest request is pending, or was
        denied or expired (luigi puts a FAILED task back to PENDING after retry_delay by itself;
        that must not run what was refused: only a new, approved request does)."""
        request = self.current(task_id)
        return request is not None and request.state in (PENDING, DENIED, EXPIRED)

    def requests(self, state: str | None = None) -> list[ApprovalRequest]:
        """Newest first."""
        chosen = [r for r in self._requests.values() if state is None or r.state == state]
        return sorted(chosen, key=lambda r: r.created, reverse=True)

    def pending_action(self, task_id: str, action: str, requester: str) -> ApprovalRequest | None:
        """An undecided request of ``requester`` for ``action`` on ``task_id`` (asking twice is one request)."""
        for request in self._requests.values():
            if (request.task_id, request.action, request.requester, request.state) == (task_id, action, requester,
                                                                                        PENDING):
                return request
        return None

    def open(self, *, task_id: str, family: str, params: dict[str, str], action: str, requester: Principal,
             kind: Kind, requirements: tuple[Requirement, ...], now: float, request_expiry: float,
             approval_expiry: float) -> ApprovalRequest:
        request = ApprovalRequest(
            id="apr-" + secrets.token_hex(6), task_id=task_id, family=family, params=dict(params), action=action,
            requester=requester.name, requester_kind=kind.value, requirements=requirements, created=now,
            expires=now + request_expiry if request_expiry > 0 else None, approval_expiry=approval_expiry)
        self._requests[request.id] = request
        if action == "add_task":
            self._current[task_id] = request.id
        return request

    def approve(self, request_id: str, principal: Principal, comment: Any, now: float,
                break_glass: bool = False) -> ApprovalRequest:
        """Count ``principal``'s approval; the request is approved once every requirement is met.

        Refused: the requester themself, a principal no requirement names, a second approval of
        the same principal (it counts once), a request no longer pending. ``break_glass``: an
        administrator approves alone, with a mandatory reason (the requester still may not).
        """
        request = self._pending(request_id)
        if principal.name == request.requester:
            raise ApprovalRefused(f"{principal.name} asked for {request.id} and may not approve it")
        if principal.name in request.approvers:
            raise ApprovalRefused(f"{principal.name} already approved {request.id}; an approver counts once", 409)
        if break_glass:
            if principal.role < Role.ADMIN:
                raise ApprovalRefused("break-glass approval needs role admin")
            reason = _comment(comment, "break-glass reason", required=True)
            request.approvals.append(Decision(principal.name, now, reason, True,
                                              tuple(r.rule for r in request.requirements)))
            self._approved(request, now)
            return request
        text = _comment(comment, "comment", required=False)
        counted = tuple(r.rule for r in request.requirements if any_matches(r.approvers, principal))
        if not counted:
            needed = "; ".join(r.describe() for r in request.requirements)
            raise ApprovalRefused(f"{principal.name} is not among the approvers of {request.id} (needs {needed})")
        request.approvals.append(Decision(principal.name, now, text, False, counted))
        if not request.missing():
            self._approved(request, now)
        return request

    def deny(self, request_id: str, principal: Principal, comment: Any, now: float) -> ApprovalRequest:
        """Deny: any principal who could approve (or an administrator), with a mandatory comment."""
        request = self._pending(request_id)
        text = _comment(comment, "comment explaining the denial", required=True)
        eligible = principal.role >= Role.ADMIN or any(any_matches(r.approvers, principal)
                                                       for r in request.requirements)
        if not eligible and principal.name != request.requester:
            raise ApprovalRefused(f"{principal.name} is not among the approvers of {request.id}")
        # The requester may withdraw their own request: that denies it too.
        request.denial = Decision(principal.name, now, text)
        self._end(request, DENIED, now, f"denied by {principal.name}: {text}")
        return request

    def due(self, now: float) -> list[ApprovalRequest]:
        """Requests whose deadline passed: pending ones undecided, approved ones not started."""
        return [r for r in self._requests.values()
                if (r.state == PENDING and r.expires is not None and now >= r.expires)
                or (r.state == APPROVED and not r.started and r.valid_until is not None and now >= r.valid_until)]

    def expire(self, request: ApprovalRequest, now: float) -> None:
        if request.state == PENDING:
            self._end(request, EXPIRED, now, "no decision before the request expired")
        else:
            self._end(request, EXPIRED, now, "the approved task did not start before the approval expired")

    def next_deadline(self) -> float | None:
        deadlines = [r.expires for r in self._requests.values() if r.state == PENDING and r.expires is not None]
        deadlines += [r.valid_until for r in self._requests.values()
                      if r.state == APPROVED and not r.started and r.valid_until is not None]
        return min(deadlines) if deadlines else None

    def run_reported(self, task_id: str, outcome: str) -> ApprovalRequest | None:
        """The approved request of ``task_id`` whose run reached ``outcome`` (running, done, failed)."""
        request = self.current(task_id)
        if request is None or request.state != APPROVED:
            return None
        if outcome == "running" and request.started and request.outcome == "running":
            return None  # a batch member heard of twice (get_work, then its combined task)
        request.outcome = outcome
        if outcome == "running":
            request.started = True
        elif outcome == "done":
            request.state = DONE
        return request

    def release(self, task_id: str) -> None:
        """Forget a refused (denied, expired) request as ``task_id``'s current one: it no longer
        holds the task. A pending request is never released this way."""
        request = self.current(task_id)
        if request is not None and request.state in (DENIED, EXPIRED):
            del self._current[task_id]

    def discard_ended(self, before: float, task_known: Callable[[str], bool]) -> int:
        """Drop requests that ended before ``before`` and hold nothing: not pending, and not the
        current request of a task the scheduler still has (a denied one holds its task). The
        audit trail keeps their story; the snapshot stays small. Returns how many went."""
        gone = [r.id for r in self._requests.values()
                if r.state != PENDING and (r.decided or r.created) < before
                and not (self._current.get(r.task_id) == r.id and task_known(r.task_id))]
        for request_id in gone:
            request = self._requests.pop(request_id)
            if self._current.get(request.task_id) == request_id:
                del self._current[request.task_id]
        return len(gone)

    def known(self, request_id: Any) -> ApprovalRequest:
        """The request ``request_id``; ApprovalRefused (404) when there is none."""
        request = self._requests.get(request_id) if isinstance(request_id, str) else None
        if request is None:
            raise ApprovalRefused(f"no approval request {request_id!r}", 404)
        return request

    def _pending(self, request_id: Any) -> ApprovalRequest:
        request = self.known(request_id)
        if request.state != PENDING:
            raise ApprovalRefused(f"{request.id} is {request.state}, not pending", 409)
        return request

    def _approved(self, request: ApprovalRequest, now: float) -> None:
        request.state = APPROVED
        request.decided = now
        if request.action == "add_task" and request.approval_expiry > 0:
            request.valid_until = now + request.approval_expiry
        if request.action != "add_task":
            request.state = DONE  # the action is applied at once

    def _end(self, request: ApprovalRequest, state: str, now: float, reason: str) -> None:
        request.state = state
        request.decided = now
        request.reason = reason

    # -- the snapshot ---------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Plain data for the signed snapshot (no classes of ours in the pickle)."""
        return {"format": EXPORT_FORMAT, "requests": [_export_request(r) for r in self._requests.values()],
                "current": dict(self._current)}

    def load(self, data: Any) -> None:
        """Replace the book with a snapshot's ``export``; ValueError when it cannot be read."""
        if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
            raise ValueError("approval requests of an unknown format")
        items, current = data.get("requests", []), data.get("current", {})
        if not isinstance(items, list) or not isinstance(current, dict):
            raise ValueError("approval requests are not a list of requests with a map of current ones")
        requests = {}
        for item in items:
            request = _import_request(item)
            requests[request.id] = request
        if not all(isinstance(k, str) and isinstance(v, str) and v in requests for k, v in current.items()):
            raise ValueError("approval requests refer to unknown requests")
        self._requests = requests
        self._current = dict(current)


def _export_request(request: ApprovalRequest) -> dict[str, Any]:
    """The request as plain data: what the snapshot keeps, and the base of ``as_dict``."""
    data = asdict(request)
    data["requirements"] = [{"rule": r.rule, "approvals": r.approvals, "approvers": [str(s) for s in r.approvers]}
                            for r in request.requirements]
    return data


def _import_request(item: dict[str, Any]) -> ApprovalRequest:
    try:
        data = dict(item)
        data["requirements"] = tuple(Requirement(r["rule"], int(r["approvals"]),
                                                 tuple(parse_selector(s) for s in r["approvers"]))
                                     for r in data["requirements"])
        data["approvals"] = [Decision(**{**d, "counted_for": tuple(d.get("counted_for", ()))})
                             for d in data["approvals"]]
        data["denial"] = Decision(**data["denial"]) if data.get("denial") else None
        request = ApprovalRequest(**data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"an approval request cannot be read: {exc}") from None
    if request.state not in STATES:
        raise ValueError(f"approval request {request.id} has unknown state {request.state!r}")
    return request
