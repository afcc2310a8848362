"""/history, /history/by_*, /tasklist, /tasklist/<name> and the JSON API, from reader.py.

Same URLs and look as luigi's pages, under the appliance's header (server/page_header.py), with
statuses in colour and, for a task whose latest run failed, the error the scheduler holds for it
(server/task_failures.py: the database records no errors). Queries run in a small thread pool,
never on the IOLoop.
Without [history] configured every page says so (404) instead of failing; with the database
down they answer 503. app.py puts each handler behind the guard (policy.ROUTES: viewer).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import sqlalchemy as sa
import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST

from luigi_appliance.history import reader
from luigi_appliance.history.clean import NAME_WIDTH, PARAM_NAME_WIDTH, TASK_ID_WIDTH, escape, stored_text
from luigi_appliance.history.metrics import prometheus_text
from luigi_appliance.history.reader import HistoryReader
from luigi_appliance.history.status import DISABLED_JSON, HistoryStatus
from luigi_appliance.server import task_failures
from luigi_appliance.server.page_header import STYLE, page_header

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_LIMIT = 1000
MAX_HOURS = 24 * 366
# Bootstrap's label colours, as the visualiser shows these statuses (RUNNING blue here: luigi's
# aqua is hard to read as text).
STATUS_STYLES = {"DONE": "success", "FAILED": "danger", "RUNNING": "primary", "PENDING": "warning"}
T = TypeVar("T")


@dataclass(frozen=True)
class HistorySource:
    """What the pages read: the queries (run off the loop) and the history's status."""

    reader: HistoryReader
    status: Callable[[], HistoryStatus]


class _BadRequest(Exception):
    pass


def fmt_ts(ts: dt.datetime | None) -> str:
    return ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else ""


def status_style(status: str | None) -> str:
    """The Bootstrap label class of a status (grey for one not listed)."""
    return "label-" + STATUS_STYLES.get(status or "", "default")


def newest_failures(rows: list[tuple[int, str | None, str | None]],
                    lookup: task_failures.FailureLookup) -> dict[int, str]:
    """Record id -> the scheduler's error, for (record id, task id, status) rows listed newest
    first: only the newest row of each task, and only if it failed (the error is its latest)."""
    reasons: dict[int, str] = {}
    seen: set[str] = set()
    for record_id, task_id, status in rows:
        if task_id is None or task_id in seen:
            continue
        seen.add(task_id)
        error = lookup(task_id) if status == "FAILED" else None
        if error:
            reasons[record_id] = error
    return reasons


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.3f}s"
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class _HistoryHandler(tornado.web.RequestHandler):
    """Common parts: the disabled/unavailable answers, argument parsing, rendering."""

    json_api = False

    def initialize(self, source: HistorySource | None) -> None:
        self.source = source

    def get_template_path(self) -> str:
        return str(TEMPLATES)

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        degraded = None
        status = self.source.status() if self.source is not None else None
        if status is not None and not status.healthy:
            degraded = f"{status.spool_events} event(s) in the spool"
        header = page_header(self)
        namespace.update(fmt_ts=fmt_ts, fmt_seconds=fmt_seconds, degraded=degraded, status_style=status_style,
                         summary=task_failures.summary, header_style=STYLE,
                         header=header.html(header.visitor(self, getattr(self, "principal", None))))
        return namespace

    def failure_reasons(self, rows: list[reader.TaskRow]) -> dict[int, str]:
        """The failure reasons of ``rows`` (newest first) by record id."""
        return newest_failures([(r.id, r.task_id, r.latest.event_name if r.latest else None) for r in rows],
                               task_failures.failure_lookup(self))

    def limit(self) -> int:
        default = self.source.reader.settings.page_size if self.source else 100
        return self._int_arg("limit", default, 1, MAX_LIMIT)

    def _int_arg(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.get_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _BadRequest(f"{name} must be an integer") from None
        if not lo <= value <= hi:
            raise _BadRequest(f"{name} must be between {lo} and {hi}")
        return value

    def next_url(self, **changes: Any) -> str:
        args = {k: self.get_argument(k) for k in self.request.arguments}
        args.update(changes)
        return f"{self.request.path}?{urlencode(args)}"

    async def get(self, *path_args: str) -> None:
        if self.source is None:
            self._answer(404, "Task history is not enabled",
                         "This scheduler records no task history: set [history] backend = postgresql in "
                         "scheduler.conf (see docs/history.md).")
            return
        try:
            await self.serve(*path_args)
        except _BadRequest as exc:
            self._answer(400, "Bad request", str(exc))
        except (sa.exc.DBAPIError, sa.exc.TimeoutError, OSError) as exc:  # the database, not a bug here
            log.warning("History page %s: database unavailable: %s", self.request.path,
                        str(getattr(exc, "orig", exc)).strip().splitlines()[:1])
            self._answer(503, "History database unavailable",
                         "The task history database cannot be reached right now; events are being kept "
                         "and will be shown when it is back.")

    # Each page's coroutine, called with its URL's groups.
    serve: Callable[..., Awaitable[None]]

    async def query(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self.source is not None  # get() answered already otherwise
        return await self.source.reader.query(fn, *args, **kwargs)

    def _answer(self, status: int, title: str, message: str) -> None:
        self.set_status(status)
        if self.json_api:
            self.finish({"error": status, "reason": message})
        else:
            self.render("message.html", title=title, message=message)


class RecentHandler(_HistoryHandler):
    """/history: events of the last ``hours`` (default 24), newest first."""

    async def serve(self) -> None:
        hours = self._int_arg("hours", 24, 1, MAX_HOURS)
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)
        try:
            page = await self.query(reader.recent_events, since=since, limit=self.limit(),
                                           cursor=self.get_argument("cursor", None))
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        self.render("recent.html", tasks=page.rows, subtitle=f"Events of the last {hours} hours, newest first",
                    failures=self.failure_reasons(page.rows),
                    next_url=self.next_url(cursor=page.next_cursor) if page.next_cursor else None)


class ByNameHandler(_HistoryHandler):
    """/history/by_name/<family>: its tasks, newest first, each with its latest event."""

    async def serve(self, name: str) -> None:
        await self._tasks(name, {})

    async def _tasks(self, name: str, params: dict[str, str]) -> None:
        before = self._int_arg("before", 0, 0, 2**63 - 1) or None
        # Looked up as stored (clean.py): a long or escaped name finds its tasks, a NUL is no error.
        page = await self.query(reader.tasks_by_name, stored_text(name, NAME_WIDTH), limit=self.limit(),
                                before=before, params=params)
        subtitle = f"Tasks named {name}" + (f" with {params}" if params else "") + ", newest first"
        self.render("recent.html", tasks=page.rows, subtitle=subtitle, failures=self.failure_reasons(page.rows),
                    next_url=self.next_url(before=page.next_cursor) if page.next_cursor else None)


class ByParamsHandler(ByNameHandler):
    """/history/by_params/<family>?data={"param": "value", ...}"""

    async def serve(self, name: str) -> None:
        try:
            params = json.loads(self.get_argument("data", "{}"))
        except ValueError:
            raise _BadRequest("data must be a JSON object of parameter names and values") from None
        if not isinstance(params, dict) or len(params) > 20:
            raise _BadRequest("data must be a JSON object of at most 20 parameter names and values")
        await self._tasks(name, {stored_text(k, PARAM_NAME_WIDTH): escape(v) for k, v in params.items()})


class ByIdHandler(_HistoryHandler):
    """/history/by_id/<record id>"""

    is_latest = False  # whether the record shown is its task's latest

    async def serve(self, record: str) -> None:
        if not record.isdigit() or len(record) > 18:
            raise _BadRequest("the record id is a number")
        await self._show(int(record))

    async def _show(self, record_id: int | None) -> None:
        task = await self.query(reader.task_record, record_id) if record_id is not None else None
        if task is None:
            self._answer(404, "No such task", "No task with this id is recorded.")
            return
        # The scheduler's error belongs to the task's latest record only.
        latest = record_id if self.is_latest else await self.query(reader.latest_record_id, task.task_id)
        failures = self.failure_reasons([task]) if latest == task.id else {}
        self.render("show.html", task=task, failure=failures.get(task.id))


class ByTaskIdHandler(ByIdHandler):
    """/history/by_task_id/<luigi task id>: the latest record of that task."""

    is_latest = True

    async def serve(self, task_id: str) -> None:
        await self._show(await self.query(reader.latest_record_id, stored_text(task_id, TASK_ID_WIDTH)))


class TaskListHandler(_HistoryHandler):
    """/tasklist: task family names, in order, a page at a time."""

    async def serve(self) -> None:
        limit = self._int_arg("limit", MAX_LIMIT, 1, MAX_LIMIT)
        names = await self.query(reader.task_names, after=self.get_argument("after", ""),
                                        limit=limit)
        self.render("menu.html", tasknames=names,
                    next_url=self.next_url(after=names[-1]) if len(names) == limit else None)


@dataclass
class Bar:
    x: int
    y: int
    w: int
    h: int
    result: str
    label: str


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar]
    longest: str


def run_chart(runs: list[reader.Run], width: int = 1100, height: int = 300) -> Chart:
    """Bars of processing time per run, oldest on the left (the data luigi's nvd3 chart shows)."""
    ordered = list(reversed(runs))
    longest = max((r.seconds or 0.0 for r in ordered), default=0.0) or 1.0
    step = max(2, width // max(1, len(ordered)))
    bars = []
    for i, run in enumerate(ordered):
        h = max(1, int(height * (run.seconds or 0.0) / longest))
        label = f"{fmt_ts(run.started)}: {run.result or 'RUNNING'} after {fmt_seconds(run.seconds)}"
        bars.append(Bar(i * step, height - h, max(1, step - 1), h, run.result or "RUNNING", label))
    return Chart(max(width, len(ordered) * step), height, bars, fmt_seconds(longest))


class RunsHandler(_HistoryHandler):
    """/tasklist/<family>: processing time of its runs (chart and table)."""

    async def serve(self, name: str) -> None:
        before = self._int_arg("before", 0, 0, 2**63 - 1) or None
        runs, cursor = await self.query(reader.runs_by_name, stored_text(name, NAME_WIDTH), limit=self.limit(),
                                        before=before)
        failures = newest_failures([(i, run.task.task_id, run.result) for i, run in enumerate(runs)],
                                   task_failures.failure_lookup(self))
        self.render("runs.html", name=name, runs=runs, chart=run_chart(runs), failures=failures,
                    next_url=self.next_url(before=cursor) if cursor else None)


def _event_json(row: reader.TaskRow) -> dict[str, Any]:
    ev = row.latest
    return {"event_id": ev.id if ev else None, "event": ev.event_name if ev else None,
            "ts": ev.ts.isoformat() if ev and ev.ts else None, "principal": ev.principal if ev else None,
            "worker_host": ev.worker_host if ev else None, "record_id": row.id, "task_id": row.task_id,
            "name": row.name, "host": row.host, "params": row.params}


class EventsApiHandler(_HistoryHandler):
    """/history/api/events?since=ISO|hours=N&name=&task_id=&limit=&cursor= (JSON, newest first)."""

    json_api = True

    async def serve(self) -> None:
        since_arg = self.get_argument("since", None)
        try:
            since = (dt.datetime.fromisoformat(since_arg) if since_arg else
                     dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=self._int_arg("hours", 24, 1, MAX_HOURS)))
        except ValueError:
            raise _BadRequest("since must be an ISO 8601 time such as 2026-01-31T00:00:00+00:00") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.timezone.utc)
        name, task_id = self.get_argument("name", None), self.get_argument("task_id", None)
        try:
            page = await self.query(reader.recent_events, since=since, limit=self.limit(),
                                    cursor=self.get_argument("cursor", None),
                                    name=stored_text(name, NAME_WIDTH) if name else None,
                                    task_id=stored_text(task_id, TASK_ID_WIDTH) if task_id else None)
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        self.finish({"events": [_event_json(r) for r in page.rows], "next_cursor": page.next_cursor})


class StatusApiHandler(_HistoryHandler):
    """/history/api/status: the writer's state and counters (JSON)."""

    json_api = True

    async def get(self) -> None:  # type: ignore[override]
        self.finish(self.source.status().to_json() if self.source is not None else DISABLED_JSON)


class MetricsHandler(_HistoryHandler):
    """/history/metrics: the same counters in Prometheus' text format (prometheus_client)."""

    async def get(self) -> None:  # type: ignore[override]
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(prometheus_text(self.source.status() if self.source is not None else None))


def routes(source: HistorySource | None) -> list[tuple[str, type, dict[str, Any]]]:
    """(pattern, handler, kwargs) for app.build_app; the patterns are luigi's plus the API's.
    ``source`` is None without [history] configured: every page says so."""
    kwargs = {"source": source}
    return [
        (r"/history", RecentHandler, kwargs),
        (r"/history/by_name/(.*?)", ByNameHandler, kwargs),
        (r"/history/by_id/(.*?)", ByIdHandler, kwargs),
        (r"/history/by_task_id/(.*?)", ByTaskIdHandler, kwargs),
        (r"/history/by_params/(.*?)", ByParamsHandler, kwargs),
        (r"/history/api/events", EventsApiHandler, kwargs),
        (r"/history/api/status", StatusApiHandler, kwargs),
        (r"/history/metrics", MetricsHandler, kwargs),
        (r"/tasklist", TaskListHandler, kwargs),
        (r"/tasklist/(.*?)", RunsHandler, kwargs),
    ]
