"""The operator commands' records: what ``--json`` prints, in shapes of their own.

luigi's answers change between luigi versions and carry internals (resources, batch ids); these
records are the documented, stable shape (docs/operator-cli.md): fixed field names, times as
ISO 8601 UTC strings (null when unknown), lists sorted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def iso_time(value: Any) -> str | None:
    """luigi's epoch seconds as ISO 8601 UTC; None for anything else (luigi says "UNKNOWN")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return dt.datetime.fromtimestamp(value, dt.timezone.utc).isoformat(timespec="seconds")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class TaskRecord:
    """One task as the scheduler holds it (luigi's serialized task)."""

    task_id: str
    family: str
    status: str
    display_name: str
    params: dict[str, Any]
    priority: Any
    workers: list[str]
    worker_running: str | None
    start_time: str | None
    last_updated: str | None
    status_message: str | None
    progress_percentage: Any

    @classmethod
    def from_luigi(cls, task_id: str, task: dict[str, Any]) -> TaskRecord:
        return cls(task_id=task_id, family=str(task.get("name", "")), status=str(task.get("status", "")),
                   display_name=str(task.get("display_name") or task_id),
                   params=dict(task.get("params") or {}), priority=task.get("priority"),
                   workers=sorted(task.get("workers") or []), worker_running=_text(task.get("worker_running")),
                   start_time=iso_time(task.get("start_time")),
                   last_updated=iso_time(task.get("last_updated", task.get("start_time"))),
                   status_message=_text(task.get("status_message")),
                   progress_percentage=task.get("progress_percentage"))


@dataclass(frozen=True)
class DepRecord:
    task_id: str
    family: str
    status: str


@dataclass(frozen=True)
class HistoryEvent:
    """One event of the task history (``/history/api/events``)."""

    time: str | None
    event: str | None
    principal: str | None
    worker_host: str | None

    @classmethod
    def from_api(cls, event: dict[str, Any]) -> HistoryEvent:
        return cls(_text(event.get("ts")), _text(event.get("event")), _text(event.get("principal")),
                   _text(event.get("worker_host")))


@dataclass(frozen=True)
class TaskDetail:
    """``task show``: the task, its direct dependencies, its error, its recorded history.
    ``history`` is None when the history could not be read; ``history_unavailable`` says why."""

    task: TaskRecord
    deps: list[DepRecord]
    error: str | None
    history: list[HistoryEvent] | None
    history_unavailable: str | None = None


@dataclass(frozen=True)
class WorkerRecord:
    """One worker the scheduler knows (luigi's worker_list)."""

    worker: str
    state: str
    host: str | None
    username: str | None
    pid: Any
    started: str | None
    last_active: str | None
    running: int
    pending: int
    unique_pending: int
    first_task: str | None
    running_tasks: list[str] = field(default_factory=list)

    @classmethod
    def from_luigi(cls, worker: dict[str, Any]) -> WorkerRecord:
        return cls(worker=str(worker.get("name", "")), state=str(worker.get("state", "")),
                   host=_text(worker.get("host")), username=_text(worker.get("username")), pid=worker.get("pid"),
                   started=iso_time(worker.get("started")), last_active=iso_time(worker.get("last_active")),
                   running=int(worker.get("num_running") or 0), pending=int(worker.get("num_pending") or 0),
                   unique_pending=int(worker.get("num_uniques") or 0),
                   first_task=_text(worker.get("first_task_display_name")) or None,
                   running_tasks=sorted(worker.get("running") or {}))
