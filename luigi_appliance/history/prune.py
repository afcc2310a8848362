"""Retention: delete events older than a cutoff, then tasks left without events, in batches.

Each batch is its own short transaction (``batch_size`` rows), so the scheduler's writer and the
pages are never blocked for long and an interrupted prune keeps what it did.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from luigi_appliance.history.schema import task_events, task_parameters, tasks


@dataclass(frozen=True)
class PruneResult:
    events: int
    tasks: int
    dry_run: bool


def _has_events(since: dt.datetime | None = None) -> sa.Exists:
    query = sa.select(task_events.c.id).where(task_events.c.task_id == tasks.c.id)
    if since is not None:
        query = query.where(task_events.c.ts >= since)
    return query.exists()


def count(engine: Engine, cutoff: dt.datetime) -> PruneResult:
    """What a prune would delete: events before ``cutoff``, tasks without newer events."""
    with engine.connect() as connection:
        events = connection.execute(sa.select(sa.func.count()).select_from(task_events)
                                    .where(task_events.c.ts < cutoff)).scalar_one()
        orphans = connection.execute(sa.select(sa.func.count()).select_from(tasks)
                                     .where(~_has_events(cutoff))).scalar_one()
    return PruneResult(events, orphans, dry_run=True)


def prune(engine: Engine, cutoff: dt.datetime, *, batch_size: int = 5000,
          progress: Callable[[str, int, int], None] | None = None) -> PruneResult:
    """Delete events before ``cutoff``, then every task with no event left; return the counts."""
    planned = count(engine, cutoff)
    report = progress or (lambda _phase, _done, _total: None)
    deleted_events = 0
    while True:
        batch = sa.select(task_events.c.id).where(task_events.c.ts < cutoff).limit(batch_size)
        with engine.begin() as connection:
            n = connection.execute(task_events.delete().where(task_events.c.id.in_(batch.scalar_subquery()))).rowcount
        deleted_events += n
        report("events", deleted_events, max(planned.events, deleted_events))
        if n < batch_size:
            break
    deleted_tasks = 0
    last_id = 0
    while True:
        # Walk tasks by id once; a task the writer gives a new event meanwhile keeps it (NOT EXISTS
        # is checked again in the DELETE, and the foreign key refuses the rest).
        with engine.begin() as connection:
            ids = list(connection.execute(sa.select(tasks.c.id).where(tasks.c.id > last_id)
                                          .order_by(tasks.c.id).limit(batch_size)).scalars())
            if not ids:
                break
            last_id = ids[-1]
            empty = list(connection.execute(sa.select(tasks.c.id).where(tasks.c.id.in_(ids), ~_has_events()))
                         .scalars())
            if empty:
                connection.execute(task_parameters.delete().where(task_parameters.c.task_id.in_(empty)))
                deleted_tasks += connection.execute(tasks.delete().where(tasks.c.id.in_(empty), ~_has_events())
                                                    ).rowcount
        report("tasks", deleted_tasks, max(planned.tasks, deleted_tasks))
    return PruneResult(deleted_events, deleted_tasks, dry_run=False)


class ProgressBar:
    """A one-line progress bar on a terminal (stderr); nothing when stderr is not a TTY."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 40):
        self.stream = stream
        self.width = width
        self.enabled = stream.isatty()
        self._last = 0.0
        self._phase = ""

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if phase == self._phase and now - self._last < 0.1 and done < total:
            return
        if self._phase and phase != self._phase:
            self.stream.write("\n")
        self._phase, self._last = phase, now
        filled = self.width if total == 0 else int(self.width * done / total)
        pct = 100 if total == 0 else 100 * done // total
        self.stream.write(f"\r{phase:>6} [{'#' * filled}{'.' * (self.width - filled)}] {pct:3d}% {done}/{total}")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._phase:
            self.stream.write("\n")
            self.stream.flush()
