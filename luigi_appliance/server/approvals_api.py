"""The approval RPCs: ``/api/approvals_list``, ``approval_show``, ``approve`` and ``deny``.

luigi-style calls: form field ``data`` is a JSON object, the answer ``{"response": ...}``, an
error ``{"error": status, "reason": text}`` with that HTTP status.

* ``approvals_list`` ``{"state": "pending"|"approved"|"denied"|"expired"|"done"|null}``:
  ``{"requests": [...]}``, newest first (each as ``ApprovalRequest.as_dict``).
* ``approval_show`` ``{"request_id": ID}``: ``{"request": ..., "task": {"status",
  "status_message", "error", "deps": [{"task_id", "status"}]} | null}`` (the scheduler's record of
  the task; null once luigi dropped it); 404 for an unknown id.
* ``approve`` ``{"request_id", "comment"?, "break_glass"?}`` and ``deny`` ``{"request_id",
  "comment"}``: ``{"request": ...}``. POST only, and the login must be fresh (a password in this
  request or a recent browser login, never a bearer token: server/fresh_login.py). Who may
  decide is the request's own rule (approvals/book.py), never the requester; the book's refusals
  come back with its status (403, 404, 409, 400) and its words.

The guard authenticated the caller and checked the route; this handler applies the method's
``policy.RPC_METHODS`` rule itself, as luigi's methods get it from the guard. Every approve and
deny call, allowed or refused, is one ``rpc`` line in the audit trail; the decision itself is
also an ``approval`` line (approvals/events.py).
"""

from __future__ import annotations

import logging
from typing import Any

from luigi_appliance import policy
from luigi_appliance.approvals.book import STATES, ApprovalRefused
from luigi_appliance.auth import Principal
from luigi_appliance.luigi_internals.scheduler import task_record
from luigi_appliance.server.fresh_login import fresh_refusal
from luigi_appliance.server.guard import GuardMixin
from luigi_appliance.server.rpc_access import BadArguments, parse_arguments

log = logging.getLogger(__name__)

METHODS = ("approvals_list", "approval_show", "approve", "deny")
APPROVALS_PATTERN = r"/api/(approvals_list|approval_show|approve|deny)"

# Each method's arguments: name -> (required, what it must be, test).
_TEXT = ("text", lambda v: isinstance(v, str))
_ID = ("a request id (text)", lambda v: isinstance(v, str))
_OPTIONAL_TEXT = ("text or null", lambda v: v is None or isinstance(v, str))
ARGUMENTS: dict[str, dict[str, tuple[bool, tuple[str, Any]]]] = {
    "approvals_list": {"state": (False, (f"one of {', '.join(STATES)} or null",
                                         lambda v: v is None or v in STATES))},
    "approval_show": {"request_id": (True, _ID)},
    "approve": {"request_id": (True, _ID), "comment": (False, _OPTIONAL_TEXT),
                "break_glass": (False, ("true or false", lambda v: isinstance(v, bool)))},
    "deny": {"request_id": (True, _ID), "comment": (False, _OPTIONAL_TEXT)},
}
NO_RULES = "no approval rules are configured"


class Refusal(Exception):
    """The call is answered with ``status`` and ``reason`` (nothing was decided)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def check_arguments(method: str, arguments: dict[str, Any]) -> None:
    """Raise BadArguments (400) naming the first argument ``method`` does not take as given."""
    accepted = ARGUMENTS[method]
    unknown = sorted(set(arguments) - set(accepted))
    if unknown:
        raise BadArguments(f"{method} takes no argument(s) {', '.join(unknown)}")
    for name, (required, (expected, valid)) in accepted.items():
        if name not in arguments:
            if required:
                raise BadArguments(f"{method} needs argument {name} ({expected})")
            continue
        if not valid(arguments[name]):
            raise BadArguments(f"{method}: argument {name} must be {expected}, got {arguments[name]!r:.80}")


def task_part(scheduler: Any, task_id: str) -> dict[str, Any] | None:
    """What the scheduler holds about a request's task: its state, error and dependencies."""
    task = task_record(scheduler, task_id)
    if task is None:
        return None
    deps = []
    for dep_id in sorted(task.deps):
        dep = task_record(scheduler, dep_id)
        deps.append({"task_id": dep_id, "status": dep.status if dep is not None else "UNKNOWN"})
    return {"status": task.status, "status_message": task.status_message, "error": task.expl, "deps": deps}


class ApprovalsHandler(GuardMixin):
    """The four approval RPCs; ``method`` is the path's last part."""

    def get(self, method: str) -> None:
        self._serve(method)

    def post(self, method: str) -> None:
        self._serve(method)

    @property
    def _source(self) -> str:
        return self.request.remote_ip or ""

    def _serve(self, method: str) -> None:
        principal = self.principal
        assert principal is not None  # the route has a role: the guard authenticated
        # Parsed first, so that even a refused call's audit line names the request it was about.
        unreadable: BadArguments | None = None
        try:
            arguments = parse_arguments(self.get_argument("data", default="{}"))
        except BadArguments as exc:
            arguments, unreadable = {}, exc
        try:
            self._check_call(method, arguments, unreadable)
            response = self._answer(method, principal, arguments)
        except Refusal as refusal:
            log.warning("Refused RPC %s for %s: %s", method, principal.name, refusal.reason)
            self._audit(principal, method, arguments, refusal.status)
            self.send_error(refusal.status, reason_text=refusal.reason, extra_headers=refusal.headers)
            return
        self._audit(principal, method, arguments, 200)
        self.write({"response": response})

    def _check_call(self, method: str, arguments: dict[str, Any], unreadable: BadArguments | None) -> None:
        if policy.RPC_METHODS[method].mutates and self.request.method != "POST":
            raise Refusal(405, "state-changing method: use POST", {"Allow": "POST"})
        try:
            if unreadable is not None:
                raise unreadable
            check_arguments(method, arguments)
        except BadArguments as exc:
            raise Refusal(exc.status, str(exc)) from None

    def _answer(self, method: str, principal: Principal, arguments: dict[str, Any]) -> dict[str, Any]:
        rule = policy.RPC_METHODS[method]
        if principal.role < rule.role:
            raise Refusal(403, f"method {method} needs role {rule.role}")
        if rule.fresh:
            stale = fresh_refusal(self, principal)
            if stale is not None:
                raise Refusal(403, stale)
        scheduler = self.guard.rpc_access.scheduler
        if scheduler is None or getattr(scheduler, "approvals", None) is None:
            raise Refusal(404, NO_RULES)
        try:
            if method == "approvals_list":
                return {"requests": [r.as_dict() for r in scheduler.approvals.book.requests(arguments.get("state"))]}
            if method == "approval_show":
                request = scheduler.approvals.book.known(arguments["request_id"])
                return {"request": request.as_dict(), "task": task_part(scheduler, request.task_id)}
            if method == "approve":
                decided = scheduler.approve_request(arguments["request_id"], principal, arguments.get("comment"),
                                                    break_glass=arguments.get("break_glass", False),
                                                    source=self._source)
            else:
                decided = scheduler.deny_request(arguments["request_id"], principal, arguments.get("comment"),
                                                 source=self._source)
        except ApprovalRefused as exc:
            raise Refusal(exc.status, str(exc)) from None
        return {"request": decided.as_dict()}

    def _audit(self, principal: Principal, method: str, arguments: dict[str, Any], status: int) -> None:
        """The ``rpc`` line of a decision call, whatever its answer (the reads write none)."""
        if not policy.RPC_METHODS[method].mutates:
            return
        request_id = arguments.get("request_id")
        self.guard.rpc_access.record(principal, self._source, method, arguments, status,
                                     request=request_id if isinstance(request_id, str) else None,
                                     break_glass=True if arguments.get("break_glass") is True else None)


def routes() -> list[tuple[str, type, dict]]:
    return [(APPROVALS_PATTERN, ApprovalsHandler, {})]
