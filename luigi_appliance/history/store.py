"""Writes batches of events to the history database: few statements per batch, idempotent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

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

    def write(self, events: list[Event]) -> None:
        """Store ``events`` in one transaction. Events already stored (same uid) are skipped."""
        if not events:
            return
        try:
            new_ids = self._write(events)
        except sa.exc.IntegrityError:
            # A cached tasks row was removed meanwhile (history prune): look everything up again.
            self._record_ids.clear()
            new_ids = self._write(events)
        if len(self._record_ids) + len(new_ids) > _CACHE_LIMIT:
            self._record_ids.clear()
        self._record_ids.update(new_ids)

    def _write(self, events: list[Event]) -> dict[str, int]:
        with self.engine.begin() as connection:
            ids = self._resolve_tasks(connection, events)
            hosts = {ids[e.task_id]: e.host for e in events if e.host}
            if hosts:
                connection.execute(tasks.update().where(tasks.c.id == sa.bindparam("rid"))
                                   .values(host=sa.bindparam("h")),
                                   [{"rid": rid, "h": host[:128]} for rid, host in hosts.items()])
            rows = [{"uid": e.uid, "task_id": ids[e.task_id], "event_name": e.event_name,
                     "ts": dt.datetime.fromtimestamp(e.ts, dt.timezone.utc),
                     "principal": e.principal[:256] if e.principal else None,
                     "worker_host": e.host[:255] if e.host else None} for e in events]
            connection.execute(_insert_ignoring_duplicates(connection, ["uid"]), rows)
        # Only committed rows may be cached.
        return ids

    def _resolve_tasks(self, connection: Connection, events: list[Event]) -> dict[str, int]:
        ids = {e.task_id: self._record_ids[e.task_id] for e in events if e.task_id in self._record_ids}
        unknown = {e.task_id: e for e in events if e.task_id not in ids}
        if not unknown:
            return ids
        ids.update(_latest_record_ids(connection, unknown))
        missing = [e for tid, e in unknown.items() if tid not in ids]
        if missing:
            connection.execute(tasks.insert(), [{"task_id": e.task_id[:200], "name": e.name[:128], "host": None}
                                                for e in missing])
            created = _latest_record_ids(connection, {e.task_id: e for e in missing})
            params = [{"task_id": created[e.task_id], "name": k[:128], "value": v}
                      for e in missing for k, v in e.params.items()]
            if params:
                connection.execute(task_parameters.insert(), params)
            ids.update(created)
        return ids


def _latest_record_ids(connection: Connection, by_task_id: dict[str, Event]) -> dict[str, int]:
    # No RETURNING: EL9's SQLite (3.34) lacks it. Task ids are stored cut at 200 characters.
    full = {tid[:200]: tid for tid in by_task_id}
    rows = connection.execute(sa.select(tasks.c.task_id, sa.func.max(tasks.c.id))
                              .where(tasks.c.task_id.in_(list(full))).group_by(tasks.c.task_id))
    return {full[short]: rid for short, rid in rows if short in full}


def _insert_ignoring_duplicates(connection: Connection, conflict: Iterable[str]) -> sa.Insert:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(task_events).on_conflict_do_nothing(index_elements=list(conflict))
    if dialect == "sqlite":
        return sqlite.insert(task_events).on_conflict_do_nothing(index_elements=list(conflict))
    raise ValueError(f"unsupported history database dialect {dialect}")
