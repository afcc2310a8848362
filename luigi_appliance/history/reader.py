"""The queries behind the history pages and the JSON API, and the thread pool they run in.

Every query is bounded (LIMIT, keyset pagination on indexed columns), served by one of the
indexes of migration 0002, and fetches a page's parameters and latest events in one statement
each (no query per row). They run in the pages' thread pool, never on the IOLoop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from luigi_appliance.history.db import make_engine
from luigi_appliance.history.schema import UTCDateTime, task_events, task_parameters, tasks
from luigi_appliance.history.settings import HistorySettings

MAX_EVENTS_SHOWN = 1000
T = TypeVar("T")


class HistoryReader:
    """Read-only access for the pages: its own engine and thread pool (``pool_size`` each)."""

    def __init__(self, settings: HistorySettings):
        self.settings = settings
        self.engine = make_engine(settings, pool_size=settings.pool_size)
        self._pool = ThreadPoolExecutor(settings.pool_size, thread_name_prefix="history-pages")

    async def query(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(connection, *args, **kwargs)``, run in the pool: never on the IOLoop."""
        def run() -> T:
            with self.engine.connect() as connection:
                return fn(connection, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()


@dataclass
class EventRow:
    id: int
    ts: dt.datetime | None
    event_name: str | None
    principal: str | None
    worker_host: str | None


@dataclass
class TaskRow:
    """A tasks row with its parameters and one or more events (newest first)."""

    id: int
    task_id: str | None
    name: str | None
    host: str | None
    params: dict[str, str] = field(default_factory=dict)
    events: list[EventRow] = field(default_factory=list)
    event_count: int = 0

    @property
    def latest(self) -> EventRow | None:
        return self.events[0] if self.events else None


@dataclass
class Page:
    rows: list[TaskRow]
    next_cursor: str | None


@dataclass
class Run:
    """A RUNNING event and what followed it (DONE, FAILED, or nothing yet)."""

    task: TaskRow
    started: dt.datetime
    result: str | None
    ended: dt.datetime | None
    worker_host: str | None
    principal: str | None

    @property
    def seconds(self) -> float | None:
        return (self.ended - self.started).total_seconds() if self.ended else None


def _event(row: sa.Row) -> EventRow:
    return EventRow(row.eid, row.ts, row.event_name, row.principal, row.worker_host)


def _attach_params(connection: Connection, rows: list[TaskRow]) -> None:
    by_id: dict[int, list[TaskRow]] = {}
    for row in rows:
        by_id.setdefault(row.id, []).append(row)
    if not by_id:
        return
    query = sa.select(task_parameters).where(task_parameters.c.task_id.in_(list(by_id)))
    for p in connection.execute(query):
        for row in by_id[p.task_id]:
            row.params[p.name] = p.value


def _encode(ts: dt.datetime, eid: int) -> str:
    return f"{ts.isoformat()}~{eid}"


def _decode(cursor: str | None) -> tuple[dt.datetime, int] | None:
    if not cursor:
        return None
    try:
        ts, eid = cursor.rsplit("~", 1)
        return dt.datetime.fromisoformat(ts), int(eid)
    except ValueError:
        raise ValueError(f"bad cursor {cursor!r}") from None


def recent_events(connection: Connection, *, since: dt.datetime, limit: int, cursor: str | None = None,
                  name: str | None = None, task_id: str | None = None) -> Page:
    """Events since ``since``, newest first, one row each (with its task and parameters)."""
    e, t = task_events, tasks
    query = (sa.select(e.c.id.label("eid"), e.c.ts, e.c.event_name, e.c.principal, e.c.worker_host,
                       t.c.id, t.c.task_id, t.c.name, t.c.host)
             .join(t, t.c.id == e.c.task_id).where(e.c.ts >= since)
             .order_by(e.c.ts.desc(), e.c.id.desc()).limit(limit + 1))
    after = _decode(cursor)
    if after:
        query = query.where(sa.tuple_(e.c.ts, e.c.id) < sa.tuple_(*after))
    if name:
        query = query.where(t.c.name == name)
    if task_id:
        query = query.where(t.c.task_id == task_id)
    result = connection.execute(query).all()
    rows = [TaskRow(r.id, r.task_id, r.name, r.host, events=[_event(r)]) for r in result[:limit]]
    _attach_params(connection, rows)
    more = len(result) > limit
    return Page(rows, _encode(result[limit - 1].ts, result[limit - 1].eid) if more else None)


def _latest_event_join(page: sa.Subquery) -> sa.Select:
    e, inner = task_events, task_events.alias("latest")
    latest = (sa.select(inner.c.id).where(inner.c.task_id == page.c.id)
              .order_by(inner.c.ts.desc(), inner.c.id.desc()).limit(1).correlate(page).scalar_subquery())
    return (sa.select(page, e.c.id.label("eid"), e.c.ts, e.c.event_name, e.c.principal, e.c.worker_host)
            .select_from(page.outerjoin(e, e.c.id == latest)).order_by(page.c.id.desc()))


def tasks_by_name(connection: Connection, name: str, *, limit: int, before: int | None = None,
                  params: dict[str, str] | None = None) -> Page:
    """Tasks of one family (optionally with these parameter values), newest first, with their
    latest event."""
    t, p = tasks, task_parameters
    query = sa.select(t).where(t.c.name == name).order_by(t.c.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(t.c.id < before)
    for key, value in (params or {}).items():
        match = sa.select(p.c.task_id).where(p.c.name == key, p.c.value == value)
        if connection.dialect.name == "postgresql":
            match = match.where(sa.func.md5(p.c.value) == sa.func.md5(value))  # ix_task_parameters_name_md5
        query = query.where(t.c.id.in_(match))
    result = connection.execute(_latest_event_join(query.subquery())).all()
    rows = [TaskRow(r.id, r.task_id, r.name, r.host, events=[_event(r)] if r.eid is not None else [])
            for r in result[:limit]]
    _attach_params(connection, rows)
    return Page(rows, str(result[limit - 1].id) if len(result) > limit else None)


def task_record(connection: Connection, record_id: int) -> TaskRow | None:
    """One tasks row with its parameters and its latest MAX_EVENTS_SHOWN events."""
    t, e = tasks, task_events
    found = connection.execute(sa.select(t).where(t.c.id == record_id)).first()
    if found is None:
        return None
    row = TaskRow(found.id, found.task_id, found.name, found.host)
    events = connection.execute(
        sa.select(e.c.id.label("eid"), e.c.ts, e.c.event_name, e.c.principal, e.c.worker_host)
        .where(e.c.task_id == record_id).order_by(e.c.ts.desc(), e.c.id.desc()).limit(MAX_EVENTS_SHOWN))
    row.events = [_event(r) for r in events]
    row.event_count = connection.execute(sa.select(sa.func.count()).select_from(e)
                                         .where(e.c.task_id == record_id)).scalar_one()
    _attach_params(connection, [row])
    return row


def latest_record_id(connection: Connection, task_id: str) -> int | None:
    return connection.execute(sa.select(sa.func.max(tasks.c.id)).where(tasks.c.task_id == task_id)).scalar()


def task_names(connection: Connection, *, after: str = "", limit: int) -> list[str]:
    """Distinct task family names in order, from the name index without reading every task
    (a recursive loose index scan: one index probe per name)."""
    query = sa.text("""
        WITH RECURSIVE names(name, n) AS (
            SELECT (SELECT min(name) FROM tasks WHERE name > :after), 1
            UNION ALL
            SELECT (SELECT min(name) FROM tasks WHERE name > names.name), n + 1
            FROM names WHERE names.name IS NOT NULL AND n < :limit
        )
        SELECT name FROM names WHERE name IS NOT NULL
    """)
    return list(connection.execute(query, {"after": after, "limit": limit}).scalars())


def runs_by_name(connection: Connection, name: str, *, limit: int,
                 before: int | None = None) -> tuple[list[Run], str | None]:
    """Runs (RUNNING and the event after it) of the newest ``limit`` tasks of a family."""
    page = tasks_by_name(connection, name, limit=limit, before=before)
    by_id = {row.id: row for row in page.rows}
    if not by_id:
        return [], None
    e = task_events
    order = (e.c.ts, e.c.id)
    inner = (sa.select(e.c.task_id, e.c.event_name, e.c.ts, e.c.principal, e.c.worker_host,
                       sa.func.lead(e.c.event_name).over(partition_by=e.c.task_id, order_by=order).label("next_name"),
                       sa.func.lead(e.c.ts, type_=UTCDateTime()).over(partition_by=e.c.task_id, order_by=order)
                       .label("next_ts"))
             .where(e.c.task_id.in_(list(by_id))).subquery())
    query = (sa.select(inner).where(inner.c.event_name == "RUNNING")
             .order_by(inner.c.ts.desc()).limit(MAX_EVENTS_SHOWN))
    runs = []
    for r in connection.execute(query):
        finished = r.next_name in ("DONE", "FAILED")
        runs.append(Run(by_id[r.task_id], r.ts, r.next_name if finished else None, r.next_ts if finished else None,
                        r.worker_host, r.principal))
    return runs, page.next_cursor
