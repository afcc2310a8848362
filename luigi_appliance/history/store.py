"""Writes batches of events to the history database: few statements per batch, idempotent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from luigi_appliance.history.clean import TASK_HOST_WIDTH, fit
from luigi_appliance.history.events import Event
from luigi_appliance.history.migrate import check_schema, upgrade
from luigi_appliance.history.schema import task_events, task_parameters, tasks

# Enough to spare a lookup for every running task; cleared when exceeded (it is only a cache).
_CACHE_LIMIT = 200_000


class EventStore:
    """One row in ``tasks`` per luigi task id (created on its first event, with its parameters),
    events in ``task_events``. Used by the writer thread only."""

    def __init__(self, engine: Engine, *, owns_schema: bool = False):
        self.engine = engine
        # SQLite (serve --dev): the scheduler owns the file, so it creates and upgrades the schema.
        self.owns_schema = owns_schema
        self._record_ids: dict[str, int] = {}  # luigi task id -> tasks.id

    def check(self) -> None:
        """Connect and check the schema revision (HistoryError / SQLAlchemy errors otherwise)."""
        if self.owns_schema:
            upgrade(self.engine, naive_timezone="UTC")
            self.owns_schema = False
        with self.engine.connect() as connection:
            check_schema(connection)

    def write(self, events: list[Event]) -> int:
        """Store ``events`` (cleaned: clean.clean_event) in one transaction; the number stored.
        Events already stored (same uid: a batch replayed after an unrecorded commit) are skipped
        and not counted."""
        if not events:
            return 0
        try:
            new_ids, stored = self._write(events)
        except sa.exc.IntegrityError:
            # A cached tasks row was removed meanwhile (history prune): look everything up again.
            self._record_ids.clear()
            new_ids, stored = self._write(events)
        if len(self._record_ids) + len(new_ids) > _CACHE_LIMIT:
            self._record_ids.clear()
        self._record_ids.update(new_ids)
        return stored

    def _write(self, events: list[Event]) -> tuple[dict[str, int], int]:
        with self.engine.begin() as connection:
            done = _stored_uids(connection, [e.uid for e in events])
            events = [e for e in events if e.uid not in done]
            if not events:
                return {}, 0
            ids = self._resolve_tasks(connection, events)
            hosts = {ids[e.task_id]: e.host for e in events if e.host}
            if hosts:
                connection.execute(tasks.update().where(tasks.c.id == sa.bindparam("rid"))
                                   .values(host=sa.bindparam("h")),
                                   [{"rid": rid, "h": fit(host, TASK_HOST_WIDTH)} for rid, host in hosts.items()])
            rows = [{"uid": e.uid, "task_id": ids[e.task_id], "event_name": e.event_name,
                     "ts": dt.datetime.fromtimestamp(e.ts, dt.timezone.utc),
                     "principal": e.principal, "worker_host": e.host} for e in events]
            connection.execute(_insert_ignoring_duplicates(connection, ["uid"]), rows)
        # Only committed rows may be cached.
        return ids, len(rows)

    def _resolve_tasks(self, connection: Connection, events: list[Event]) -> dict[str, int]:
        ids = {e.task_id: self._record_ids[e.task_id] for e in events if e.task_id in self._record_ids}
        unknown = {e.task_id: e for e in events if e.task_id not in ids}
        if not unknown:
            return ids
        ids.update(_latest_record_ids(connection, unknown))
        missing = [e for tid, e in unknown.items() if tid not in ids]
        if missing:
            connection.execute(tasks.insert(), [{"task_id": e.task_id, "name": e.name, "host": None}
                                                for e in missing])
            created = _latest_record_ids(connection, {e.task_id: e for e in missing})
            params = [{"task_id": created[e.task_id], "name": k, "value": v}
                      for e in missing for k, v in e.params.items()]
            if params:
                connection.execute(task_parameters.insert(), params)
            ids.update(created)
        return ids


def _latest_record_ids(connection: Connection, by_task_id: dict[str, Event]) -> dict[str, int]:
    # No RETURNING: EL9's SQLite (3.34) lacks it. Cleaned task ids fit the column, uncut.
    rows = connection.execute(sa.select(tasks.c.task_id, sa.func.max(tasks.c.id))
                              .where(tasks.c.task_id.in_(list(by_task_id))).group_by(tasks.c.task_id))
    return {task_id: rid for task_id, rid in rows if task_id in by_task_id}


def _stored_uids(connection: Connection, uids: list[str]) -> set[str]:
    # Asked first rather than counted from the insert: executemany's rowcount covers only its
    # last page of rows on psycopg2, and the counters must be exact.
    return set(connection.execute(sa.select(task_events.c.uid).where(task_events.c.uid.in_(uids))).scalars())


def _insert_ignoring_duplicates(connection: Connection, conflict: Iterable[str]) -> sa.Insert:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(task_events).on_conflict_do_nothing(index_elements=list(conflict))
    if dialect == "sqlite":
        return sqlite.insert(task_events).on_conflict_do_nothing(index_elements=list(conflict))
    raise ValueError(f"unsupported history database dialect {dialect}")
