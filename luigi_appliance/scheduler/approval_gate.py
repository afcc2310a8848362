"""Approval gates in the scheduler itself: a gated task is kept PENDING and never handed out by
get_work until its request is approved (luigi_appliance/approvals/ has the rules and records).

Decided by the scheduler's record and the verified caller (auth/context.py), never by what the
client says: the family is the recorded one when the task is known, the principal's kind comes
from its identity. Whatever path a task arrives by (add_task, add_tasks, luigi's RPC handler),
it passes through ``add_task`` here. A gated operator action (forgive_failures, re_enable_task,
mark_as_done) becomes a request and is applied when approved. Denied and expired requests fail
their task with the reason as its error. Outside a request (the scheduler's own calls, luigi's
tests) nothing is gated.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from luigi.task_status import BATCH_RUNNING, DISABLED, DONE, FAILED, PENDING, RUNNING, SUSPENDED, UNKNOWN

from luigi_appliance.approvals.book import APPROVED, KEEP_ENDED, ApprovalBook, ApprovalRefused, ApprovalRequest
from luigi_appliance.approvals.events import ApprovalEvents
from luigi_appliance.approvals.rules import ApprovalRules
from luigi_appliance.auth import Principal
from luigi_appliance.auth.context import current_caller
from luigi_appliance.luigi_internals.scheduler import LuigiScheduler

_ADD_TASK = inspect.signature(LuigiScheduler.add_task)
# What each gated operator action changes: only a task in these states (luigi's own conditions).
ACTION_APPLIES = {
    "forgive_failures": frozenset({FAILED}),
    "re_enable_task": frozenset({DISABLED}),
    "mark_as_done": frozenset({RUNNING, FAILED, DISABLED}),
}
# add_task statuses that say a task runs, ran or was set aside: never of a task that waits.
REPORTS_OF_A_RUN = frozenset({RUNNING, BATCH_RUNNING, DONE, DISABLED})


class Approvals:
    """The gates of one scheduler: rules, the request book and where events go."""

    def __init__(self, rules: ApprovalRules, events: ApprovalEvents | None = None,
                 clock: Callable[[], float] | None = None):
        self.rules = rules
        self.book = ApprovalBook()
        self.events = events or ApprovalEvents()
        self.clock = clock or _now


def _now() -> float:
    # This module's time, looked up at each call: a journalled call pins it (luigi_internals/clock.py).
    return time.time()


class ApprovalGated(LuigiScheduler):
    """A scheduler whose tasks may wait for approval (``approvals``; None: no gate at all)."""

    def __init__(self, *args: Any, approvals: Approvals | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.approvals = approvals
        self._approval_deadline: float | None = None

    # -- get_work -----------------------------------------------------------------------------

    def may_schedule(self, task: Any) -> bool:
        return super().may_schedule(task) and (self.approvals is None or not self.approvals.book.holds(task.id))

    def get_work(self, *args: Any, **kwargs: Any) -> Any:
        self.expire_due()
        reply = super().get_work(*args, **kwargs)
        if self.approvals is not None and isinstance(reply, dict) and reply.get("batch_task_ids"):
            # set_batch_running tells no task history: the batched runs start here
            self._runs_reported([t for t in map(self.task_record, reply["batch_task_ids"]) if t is not None],
                                "running")
        return reply

    def prune(self) -> None:
        self.expire_due()
        super().prune()
        if self.approvals is not None:
            now = self.approvals.clock()
            self.approvals.book.discard_ended(now - KEEP_ENDED, lambda task_id: self.task_record(task_id) is not None)
            self._approval_deadline = self.approvals.book.next_deadline()

    def may_remove(self, task: Any) -> bool:
        """A task whose request is undecided, or approved and not started yet, stays although no
        worker wants it any more: the requester may have left (``run --no-wait``) and comes back
        once it is decided, or an assistant takes it. request_expiry and approval_expiry bound
        how long."""
        if self.approvals is None:
            return super().may_remove(task)
        request = self.approvals.book.current(task.id)
        waiting = request is not None and (request.state == "pending"
                                           or (request.state == APPROVED and not request.started))
        return not waiting and super().may_remove(task)

    # -- submissions --------------------------------------------------------------------------

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        caller = current_caller.get()
        if self.approvals is None or caller is None:
            return super().add_task(*args, **kwargs)
        call = _ADD_TASK.bind(self, *args, **kwargs)
        call.apply_defaults()
        task_id, status = call.arguments["task_id"], call.arguments["status"]
        before = self.task_record(task_id) if isinstance(task_id, str) else None
        gate = None
        if status in (PENDING, SUSPENDED) and self._new_run(task_id, before):  # luigi files SUSPENDED as PENDING
            family, params = _judged(before, call.arguments)
            gate = self.approvals.rules.gate(caller.principal, "add_task", family, params)
            if gate is None and isinstance(task_id, str):
                # Judged afresh: a principal no rule gates may run what another's request was
                # refused for (it could have submitted it in the first place).
                self.approvals.book.release(task_id)
        result = super().add_task(*args, **kwargs)
        task = self.task_record(task_id) if isinstance(task_id, str) else None
        if gate is not None and task is not None and task.status == PENDING:
            request = self.approvals.book.open(
                task_id=task_id, family=task.family or "", params=dict(task.public_params), action="add_task",
                requester=caller.principal, kind=self.approvals.rules.kind(caller.principal),
                requirements=gate.requirements, now=self.approvals.clock(), request_expiry=gate.request_expiry,
                approval_expiry=gate.approval_expiry)
            self._changed(request)
            self.approvals.events.emit("requested", request, principal=caller.principal.name,
                                       source=caller.remote_ip, missing=request.missing())
        current = self.approvals.book.current(task_id) if isinstance(task_id, str) else None
        if current is not None and current.state == "pending":
            return {"approval_request": current.id, "summary": current.summary()}
        return result

    def _new_run(self, task_id: Any, before: Any) -> bool:
        """Whether a PENDING add_task of ``task_id`` would start a run nobody approved yet: a task
        new to the scheduler, a dependency placeholder, or one that is DONE, FAILED or DISABLED
        again, or one whose request was refused; not a task already held or already running."""
        assert self.approvals is not None
        request = self.approvals.book.current(task_id) if isinstance(task_id, str) else None
        if request is not None and request.state == "pending":
            return False  # one more stakeholder of the request already there
        if before is None or before.status == UNKNOWN or not before.family:
            return True
        if request is not None and request.state in ("denied", "expired"):
            return True  # submitted again after a refusal: a new request
        # PENDING or RUNNING: joining the run there is (approved, or never gated). luigi's own
        # retries of a failed approved run go through prune (retry_delay), not through here; a
        # worker submitting a FAILED task again, any time later, asks for a new run.
        return before.status in (DONE, FAILED, DISABLED)

    def approval_refusal(self, principal: Principal, method: str, arguments: dict[str, Any],
                         held_in_batch: frozenset[str] = frozenset()) -> str | None:
        """Why an add_task may not report this status, or None. Called by the access rules before
        the call applies; ``held_in_batch``: ids an earlier entry of the same add_tasks batch
        submits and the gate will hold.

        Refused: a held task reported running, done or disabled (no worker was handed it; done
        would release its dependants); a new task the rules gate reported running or disabled
        instead of submitted (a luigi worker always submits PENDING first), except the combined
        task of a batch get_work handed out; a FAILED or DISABLED task reported done when the
        rules gate mark_as_done for the caller (it is the same act). A failure or an unknown state
        runs nothing: allowed. A new task reported done is allowed: luigi's worker does so when
        the output already exists, and nothing runs (docs/approvals.md, what a gate does not do).
        """
        if self.approvals is None or method != "add_task":
            return None
        task_id, status = arguments.get("task_id"), arguments.get("status", PENDING)
        if not isinstance(task_id, str) or status not in REPORTS_OF_A_RUN:
            return None
        request = self.approvals.book.current(task_id)
        if task_id in held_in_batch or (request is not None and self.approvals.book.holds(task_id)):
            waiting = "awaits approval" if request is None or request.state == "pending" else f"was {request.state}"
            which = f" ({request.id})" if request is not None else ""
            return f"task {task_id!r} {waiting}{which} and was handed to no worker"
        before = self.task_record(task_id)
        family, params = _judged(before, arguments)
        if status == DONE:
            if before is None or before.status not in (FAILED, DISABLED):
                return None
            if self.approvals.rules.gate(principal, "mark_as_done", family, params) is None:
                return None
            return (f"task {task_id!r} is {before.status}: reporting it done marks it done, which the approval "
                    "rules gate (mark_as_done opens a request)")
        if not self._new_run(task_id, before) or self._handed_out_batch(arguments):
            return None
        if self.approvals.rules.gate(principal, "add_task", family, params) is None:
            return None
        return f"task {task_id!r} must be submitted (PENDING) and approved before it is reported {status}"

    def would_hold(self, principal: Principal, arguments: dict[str, Any]) -> bool:
        """Whether this add_task would open a request (or join a pending one): for add_tasks,
        whose later entries are checked against what its earlier ones will do."""
        if self.approvals is None or arguments.get("status", PENDING) not in (PENDING, SUSPENDED):
            return False
        task_id = arguments.get("task_id")
        if not isinstance(task_id, str):
            return False
        before = self.task_record(task_id)
        if not self._new_run(task_id, before):
            return self.approvals.book.holds(task_id)
        family, params = _judged(before, arguments)
        return self.approvals.rules.gate(principal, "add_task", family, params) is not None

    def _handed_out_batch(self, arguments: dict[str, Any]) -> bool:
        """A luigi worker reports the combined task of a batch RUNNING under a new id: its
        members are the BATCH_RUNNING tasks of that batch get_work handed out, none held."""
        batch_id = arguments.get("batch_id")
        if arguments.get("status") != RUNNING or not isinstance(batch_id, str):
            return False
        assert self.approvals is not None
        members = self.task_state.get_batch_running_tasks(batch_id)
        return bool(members) and not any(self.approvals.book.holds(t.id) for t in members)

    # -- gated operator actions ---------------------------------------------------------------

    def forgive_failures(self, task_id: Any = None) -> Any:
        held = self._gated_action("forgive_failures", task_id)
        return held if held is not None else self._released(task_id, super().forgive_failures(task_id))

    def re_enable_task(self, task_id: Any) -> Any:
        held = self._gated_action("re_enable_task", task_id)
        return held if held is not None else self._released(task_id, super().re_enable_task(task_id))

    def mark_as_done(self, task_id: Any = None) -> Any:
        held = self._gated_action("mark_as_done", task_id)
        return held if held is not None else self._released(task_id, super().mark_as_done(task_id))

    def _released(self, task_id: Any, result: Any) -> Any:
        """An operator action that applied ungated decides about the task anew: a refused
        request no longer holds it (forgiven, it would otherwise wait for nothing), but only when
        no rule gates the caller's own submission of it; otherwise the task keeps waiting for a
        new, approved request (a requester must not forgive their way past a refusal)."""
        caller = current_caller.get()
        task = self.task_record(task_id) if isinstance(task_id, str) else None
        if self.approvals is None or caller is None or task is None:
            return result
        family, params = _judged(task, {})
        if self.approvals.rules.gate(caller.principal, "add_task", family, params) is None:
            self.approvals.book.release(task.id)
        return result

    def _gated_action(self, action: str, task_id: Any) -> dict[str, Any] | None:
        caller = current_caller.get()
        if self.approvals is None or caller is None or not isinstance(task_id, str):
            return None
        task = self.task_record(task_id)
        if task is None or task.status not in ACTION_APPLIES[action]:
            return None  # luigi would change nothing
        if action == "re_enable_task" and not task.scheduler_disable_time:
            return None  # luigi re-enables only what the scheduler itself disabled
        gate = self.approvals.rules.gate(caller.principal, action, task.family or "", _text_params(task.params))
        if gate is None:
            return None
        book = self.approvals.book
        request = book.pending_action(task_id, action, caller.principal.name)
        if request is None:
            request = book.open(task_id=task_id, family=task.family or "", params=dict(task.public_params),
                                action=action, requester=caller.principal,
                                kind=self.approvals.rules.kind(caller.principal), requirements=gate.requirements,
                                now=self.approvals.clock(), request_expiry=gate.request_expiry, approval_expiry=0.0)
            self._changed(request)
            self.approvals.events.emit("requested", request, principal=caller.principal.name,
                                       source=caller.remote_ip, missing=request.missing())
        return {"task_id": task_id, "status": task.status, "approval_request": request.id,
                "summary": request.summary()}

    # -- decisions ----------------------------------------------------------------------------

    def approve_request(self, request_id: Any, principal: Principal, comment: Any, *, break_glass: bool = False,
                        source: str = "") -> ApprovalRequest:
        """Count an approval (ApprovalRefused says why not); once approved, release the task or
        apply the action."""
        approvals = self._require()
        refusal = approvals.rules.decider_refusal(principal)
        # An unknown id is a 404 first, and a requester is told that it is their own request.
        if refusal is not None and approvals.book.known(request_id).requester != principal.name:
            raise ApprovalRefused(refusal)
        request = approvals.book.approve(request_id, principal, comment, approvals.clock(), break_glass)
        text = request.approvals[-1].comment
        approvals.events.emit("break_glass" if break_glass else "approval", request, principal=principal.name,
                              source=source, comment=text, missing=request.missing())
        if request.state != "pending":
            approvals.events.emit("approved", request, principal=principal.name, source=source,
                                  approvers=request.approvers)
            self._apply(request)
        self._changed(request)
        return request

    def deny_request(self, request_id: Any, principal: Principal, comment: Any, *, source: str = "") -> ApprovalRequest:
        approvals = self._require()
        refusal = approvals.rules.decider_refusal(principal)
        if refusal is not None and approvals.book.known(request_id).requester != principal.name:
            raise ApprovalRefused(refusal)  # a requester may still withdraw their own request
        request = approvals.book.deny(request_id, principal, comment, approvals.clock())
        approvals.events.emit("denied", request, principal=principal.name, source=source,
                              comment=request.denial.comment if request.denial else None)
        self._fail(request)
        self._changed(request)
        return request

    def expire_due(self) -> None:
        """End the requests whose deadline passed: their tasks fail with the reason."""
        if self.approvals is None or self._approval_deadline is None:
            return
        now = self.approvals.clock()
        if now < self._approval_deadline:
            return
        for request in self.approvals.book.due(now):
            self.approvals.book.expire(request, now)
            self.approvals.events.emit("expired", request, principal=None, comment=request.reason)
            self._fail(request)
        self._approval_deadline = self.approvals.book.next_deadline()

    def _apply(self, request: ApprovalRequest) -> None:
        task = self.task_record(request.task_id)
        if request.action == "add_task":
            if task is not None and task.status == PENDING:
                task.status_message = request.summary()
            return
        action = {"forgive_failures": super().forgive_failures, "re_enable_task": super().re_enable_task,
                  "mark_as_done": super().mark_as_done}[request.action]
        token = current_caller.set(None)  # the scheduler applies it: nothing is gated twice
        try:
            action(request.task_id)
        finally:
            current_caller.reset(token)
        assert self.approvals is not None
        self.approvals.book.release(request.task_id)
        self.approvals.events.emit("applied", request, principal=None,
                                   status=task.status if task is not None else None)

    def _fail(self, request: ApprovalRequest) -> None:
        if request.action != "add_task":
            return
        task = self.task_record(request.task_id)
        if task is None or task.status not in (PENDING, RUNNING, BATCH_RUNNING):
            return
        task.expl = request.summary()
        task.status_message = request.summary()
        self.record_status(task, FAILED)

    def _require(self) -> Approvals:
        if self.approvals is None:
            raise ApprovalRefused("this scheduler has no approval rules ([approval.NAME])", 404)
        self.expire_due()
        return self.approvals

    def _changed(self, request: ApprovalRequest) -> None:
        assert self.approvals is not None
        task = self.task_record(request.task_id)
        if request.action == "add_task" and request.state == "pending" and task is not None:
            task.status_message = request.summary()
        self._approval_deadline = self.approvals.book.next_deadline()

    # -- the run of an approved task ----------------------------------------------------------

    def status_reported(self, task: Any, status: str) -> None:
        super().status_reported(task, status)
        if self.approvals is None:
            return
        outcome = {RUNNING: "running", DONE: "done", FAILED: "failed"}.get(status)
        if outcome is None or (outcome != "running" and task.status not in (RUNNING, BATCH_RUNNING)):
            return  # marked done or failed by hand, or reported of a task that did not run here
        # A batch is reported through its combined task: the run of each member is theirs too.
        batch_id = getattr(task, "batch_id", None)
        members = [t for t in self.task_state.get_batch_running_tasks(batch_id) if t is not task] if batch_id else []
        self._runs_reported([task, *members], outcome)

    def _runs_reported(self, tasks: Any, outcome: str) -> None:
        assert self.approvals is not None
        for member in tasks:
            request = self.approvals.book.run_reported(member.id, outcome)
            if request is not None:
                self.approvals.events.emit(f"run_{'started' if outcome == 'running' else outcome}", request,
                                           principal=None)
        self._approval_deadline = self.approvals.book.next_deadline()

    # -- the snapshot -------------------------------------------------------------------------

    def export_approvals(self) -> dict[str, Any] | None:
        return self.approvals.book.export() if self.approvals is not None else None

    def load_approvals(self, data: Any) -> None:
        """Install a snapshot's requests (ValueError when unreadable: the caller refuses to start
        rather than run what waited). Without rules now, pending requests still hold their tasks."""
        if data is None:
            return
        if self.approvals is None:
            book = ApprovalBook()
            book.load(data)  # unreadable: ValueError, with rules or without
            if any(book.holds(task_id) for task_id in data["current"]):
                raise ValueError("the snapshot holds pending approval requests (or refused ones that keep "
                                 "their task from running) but this scheduler has no approval rules; their "
                                 "tasks would run unapproved")
            return
        self.approvals.book.load(data)
        self._approval_deadline = self.approvals.book.next_deadline()


def _text_params(params: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {}


def _judged(record: Any, arguments: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The family and parameters a rule is matched against: the scheduler's record when it has
    one (luigi keeps the first submission's; a re-submission declaring others must not dodge a
    rule), else what the call declares."""
    if record is not None and record.family:
        return record.family, _text_params(record.params)
    return str(arguments.get("family") or ""), _text_params(arguments.get("params") or {})
