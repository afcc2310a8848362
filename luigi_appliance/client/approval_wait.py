"""The tasks of a run that the scheduler holds for approval, as the worker follows them.

The scheduler answers add_task of a gated task with ``{"approval_request", "summary"}`` and
add_tasks with a ``held`` list (client/remote.py records both here); the worker logs one WARNING
line per held task, naming the request, who asked and what is missing. luigi's worker ends its
run when get_work has nothing for it, so the worker's get_work (client/remote.py) asks again,
while this worker has nothing else to run and a request of its own is still pending: the
scheduler hands the task out once it is approved. luigi's own ``keep_alive`` is not the tool:
it keeps a worker while the scheduler counts any of its tasks PENDING or FAILED, so a run with
one failed task would never end. A denied or expired request ends the wait for its task (the
scheduler failed it, with the decision as its error) and the run ends as failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# A child of luigi's worker logger: the lines come out with the worker's own, at its level.
log = logging.getLogger("luigi-interface").getChild("approvals")

RELEASED = frozenset({"approved", "done"})
ENDED = frozenset({"denied", "expired"})
_AWAITING = "Awaiting approval"


@dataclass(frozen=True)
class HeldTask:
    """A task the scheduler keeps from every worker until ``request_id`` is decided."""

    task_id: str
    request_id: str
    summary: str

    def log_line(self) -> str:
        """``Task X awaits approval (apr-...): requested by ...; needs ...``."""
        if self.summary.startswith(_AWAITING):
            return f"Task {self.task_id} awaits approval{self.summary[len(_AWAITING):]}"
        return f"Task {self.task_id} awaits approval ({self.request_id}): {self.summary}"


@dataclass(frozen=True)
class Decided:
    """A held task's request that was decided: ``state`` approved/done, denied or expired."""

    task_id: str
    request_id: str
    state: str
    summary: str


@dataclass(frozen=True)
class Progress:
    """One look at the held tasks' requests: whether any is still pending, and whether one was
    approved since the last look (its task is for the next get_work)."""

    waiting: bool
    released: bool


class ApprovalWatch:
    """The held tasks of one run. ``wait``: whether the worker waits for their decisions
    (``run --no-wait``: False). Thread-safe: add_tasks answers arrive on the batch sender's thread."""

    def __init__(self, wait: bool = True):
        self.wait = wait
        self._lock = threading.Lock()
        self._held: dict[str, HeldTask] = {}
        self._ended: list[Decided] = []
        self._waiting_logged = False

    # -- what the scheduler answered ------------------------------------------------------------

    def record(self, task_id: Any, request_id: Any, summary: Any) -> None:
        """One held task, logged once per request."""
        if not isinstance(task_id, str) or not isinstance(request_id, str):
            return
        held = HeldTask(task_id, request_id, summary if isinstance(summary, str) else "")
        with self._lock:
            known = self._held.get(task_id)
            self._held[task_id] = held
        if known is None or known.request_id != request_id:
            log.warning(held.log_line())

    def record_add_task(self, task_id: Any, answer: Any) -> None:
        """add_task's answer: ``{"approval_request", "summary"}`` for a held task, else luigi's None."""
        if isinstance(answer, dict) and answer.get("approval_request"):
            self.record(task_id, answer["approval_request"], answer.get("summary"))

    def record_add_tasks(self, answer: Any) -> None:
        """add_tasks' answer: its ``held`` list, one entry per task of the batch awaiting approval."""
        held = answer.get("held") if isinstance(answer, dict) else None
        for item in held if isinstance(held, list) else []:
            if isinstance(item, dict):
                self.record(item.get("task_id"), item.get("approval_request"), item.get("summary"))

    def handed_out(self, task_ids: Iterable[str]) -> None:
        """get_work gave this worker these tasks: they wait for nothing any more."""
        with self._lock:
            released = [self._held.pop(t) for t in task_ids if t in self._held]
        for held in released:
            log.info("Task %s: approved (%s), the scheduler handed it to this worker", held.task_id, held.request_id)

    # -- what the run looks like --------------------------------------------------------------

    @property
    def held(self) -> list[HeldTask]:
        with self._lock:
            return list(self._held.values())

    @property
    def ended(self) -> list[Decided]:
        """The held tasks whose request was denied or expired (the scheduler failed them)."""
        with self._lock:
            return list(self._ended)

    def follow(self, pending_requests: Callable[[], set[str]],
               request_of: Callable[[str], dict[str, Any] | None]) -> Progress:
        """Ask the scheduler about the held tasks: ``pending_requests`` gives the ids of its
        pending requests (one call for all), ``request_of`` one request that is no longer pending
        (None: the scheduler does not know it any more)."""
        held = self.held
        if not held:
            return Progress(waiting=False, released=False)
        if not self._waiting_logged:
            self._waiting_logged = True
            log.info("Waiting for the decision on %d task(s) awaiting approval (run --no-wait would exit now)",
                     len(held))
        pending = pending_requests()
        released = False
        for task in held:
            if task.request_id in pending:
                continue
            request = request_of(task.request_id)
            released |= self._decided(task, request)
        return Progress(waiting=any(t.request_id in pending for t in held), released=released)

    def _decided(self, task: HeldTask, request: dict[str, Any] | None) -> bool:
        """Stop waiting for ``task``; True if its request was approved."""
        with self._lock:
            self._held.pop(task.task_id, None)
        if request is None:
            log.warning("Task %s: the scheduler no longer knows its approval request %s; not waiting for it",
                        task.task_id, task.request_id)
            return False
        state = str(request.get("state", ""))
        summary = str(request.get("summary") or f"{state} ({task.request_id})")
        if state in RELEASED:
            log.info("Task %s: %s", task.task_id, summary)
            return True
        if state in ENDED:
            with self._lock:
                self._ended.append(Decided(task.task_id, task.request_id, state, summary))
            log.error("Task %s will not run: %s", task.task_id, summary)
        else:
            log.warning("Task %s: approval request %s is %s; not waiting for it", task.task_id, task.request_id,
                        state or "in an unknown state")
        return False
