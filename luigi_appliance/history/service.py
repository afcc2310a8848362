"""The scheduler's task history: a luigi TaskHistory that only enqueues, and its writer thread.

The scheduler calls ``task_scheduled``/``task_started``/``task_finished`` on its IOLoop thread.
Those build an :class:`Event` and put it on a bounded in-memory queue, nothing else: no I/O,
no lock held by anything slow. One writer thread takes batches off the queue and stores them
(:class:`EventStore`). While the database is unreachable, failing or at the wrong schema
revision, batches go to the spool file instead (fsync'd) and /healthz says ``degraded``; when
the database is back the spool is replayed in order before any newer event, so the order in the
database is the order the scheduler emitted.

Events are lost only when the queue (``queue_size``) or the spool (``spool_limit``) is full:
the ``spool_full`` policy (``drop-new``) drops the new events, counts them (metric
``luigi_appliance_history_events_dropped_total``) and logs an error at once and then every
minute while it lasts. A SIGKILL loses the events still in the queue, at most about
``flush_interval`` + ``BATCH_LINGER`` of them, like the state snapshot loses at most one interval.
"""

from __future__ import annotations

import itertools
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from luigi.task_history import TaskHistory
from luigi.task_status import DONE, FAILED, PENDING, RUNNING

from luigi_appliance.auth.context import current_caller
from luigi_appliance.errors import HistoryError
from luigi_appliance.history.db import describe, make_engine
from luigi_appliance.history.events import Event
from luigi_appliance.history.settings import HistorySettings
from luigi_appliance.history.spool import Spool
from luigi_appliance.history.store import EventStore

log = logging.getLogger(__name__)

SPOOL_NAME = "history-spool"
# How often a lasting problem (database down, events dropped) is logged again.
REMINDER_INTERVAL = 60.0
# How long the writer waits after the first event of a batch for more to arrive (seconds).
BATCH_LINGER = 0.1


@dataclass
class Stats:
    """Counters since the scheduler started (exposed on /history/api/status and /history/metrics)."""

    emitted: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0


class _DropLog:
    """Rate-limited error logging of dropped events: the first at once, then one a minute."""

    def __init__(self, what: str):
        self.what = what
        self.count = 0
        self.unreported = 0
        self.last_log = 0.0
        self.last_drop: float | None = None

    def recent(self) -> bool:
        return self.last_drop is not None and time.monotonic() - self.last_drop < REMINDER_INTERVAL

    def add(self, count: int, detail: str) -> None:
        self.count += count
        self.unreported += count
        now = self.last_drop = time.monotonic()
        if self.unreported == self.count or now - self.last_log >= REMINDER_INTERVAL:
            log.error("TASK HISTORY EVENTS DROPPED: %d event(s) not recorded (%d in total) because %s (%s)",
                      self.unreported, self.count, self.what, detail)
            self.unreported = 0
            self.last_log = now


class HistoryService(TaskHistory):
    """Luigi's TaskHistory interface for the scheduler, plus the writer thread behind it."""

    def __init__(self, settings: HistorySettings, state_dir: Path):
        self.settings = settings
        self.stats = Stats()
        self.spool = Spool(state_dir / SPOOL_NAME, settings.spool_limit)
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=settings.queue_size)
        self._queue_drops = _DropLog(f"the in-memory queue is full ([history] queue_size = {settings.queue_size})")
        self._spool_drops = _DropLog(f"the spool {self.spool.path} is full ([history] spool_limit = "
                                     f"{settings.spool_limit} bytes, spool_full = {settings.spool_full})")
        self._stopping = threading.Event()
        # Event uids: random per process, then a counter (uuid4 per event was a syscall on the
        # loop). 12 + at most 20 hex digits fit the 32-character column.
        self._uid_prefix = secrets.token_hex(6)
        self._uid_counter = itertools.count()
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._store: EventStore | None = None
        self.db_state = "starting"  # starting | ok | down
        self.last_error: str | None = None
        self._down_since = 0.0
        self._next_attempt = 0.0
        self._last_reminder = 0.0

    # ---- luigi's TaskHistory, called on the IOLoop: enqueue only ------------------------------

    def task_scheduled(self, task: Any) -> None:
        self._emit(task, PENDING)

    def task_started(self, task: Any, worker_host: str | None) -> None:
        self._emit(task, RUNNING, worker_host)

    def task_finished(self, task: Any, successful: bool) -> None:
        self._emit(task, DONE if successful else FAILED)

    def _emit(self, task: Any, event_name: str, host: str | None = None) -> None:
        caller = current_caller.get()
        uid = f"{self._uid_prefix}{next(self._uid_counter):x}"
        event = Event(uid, task.id, task.family or "", {k: str(v) for k, v in (task.params or {}).items()},
                      event_name, time.time(), host, caller.principal.name if caller else None)
        self.stats.emitted += 1
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._queue_drops.add(1, f"{event_name} of {task.id}")

    # ---- state ---------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False while the database is down, events wait in the spool, or events were just dropped."""
        return (self.db_state != "down" and self.spool.pending_events == 0 and self._thread.is_alive()
                and not self._queue_drops.recent() and not self._spool_drops.recent())

    def status(self) -> dict[str, Any]:
        return {
            "backend": self.settings.backend,
            "database": describe(self.settings),
            "state": "ok" if self.healthy else "degraded",
            "database_state": self.db_state,
            "last_error": self.last_error,
            "queued": self._queue.qsize(),
            "spool_events": self.spool.pending_events,
            "spool_bytes": self.spool.size,
            "spool_limit_bytes": self.spool.limit,
            "emitted": self.stats.emitted,
            "written": self.stats.written,
            "spooled": self.stats.spooled,
            "replayed": self.stats.replayed,
            "dropped": self._queue_drops.count + self._spool_drops.count,
        }

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the spool left by a previous run and start the writer. Never touches the database
        here: the scheduler starts and serves with the database down."""
        self.spool.open()
        if self.settings.backend == "postgresql" and self.settings.is_insecure:
            log.warning("INSECURE: task history database %s is reached with sslmode=%s ([history] allow_insecure "
                        "= true): its identity is not verified", describe(self.settings), self.settings.sslmode)
        self._store = EventStore(make_engine(self.settings, pool_size=1), owns_schema=self.settings.backend == "sqlite")
        self._thread.start()
        log.info("Task history: %s (events queued in memory, written by a background thread)",
                 describe(self.settings))

    def close(self) -> None:
        """Flush the queue (to the database, or to the spool) and stop the writer."""
        self._stopping.set()
        timeout = self.settings.connect_timeout + self.settings.statement_timeout + 5
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("Task history writer did not finish within %.0fs: %d queued event(s) are lost",
                      timeout, self._queue.qsize())
        elif self._store is not None:
            self._store.engine.dispose()

    # ---- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            # Replaying the spool: take what is queued without waiting, so replay runs at full speed.
            batch = self._next_batch(wait=not (self.spool.pending_events and self.db_state == "ok"))
            try:
                self._handle(batch)
            except Exception:  # the writer must survive anything, or history stops silently
                log.exception("Task history writer: unexpected error; %d event(s) go to the spool", len(batch))
                self._to_spool(batch)
        log.info("Task history writer stopped: %d written, %d in the spool", self.stats.written,
                 self.spool.pending_events)

    def _next_batch(self, wait: bool) -> list[Event]:
        try:
            batch = [self._queue.get(timeout=self.settings.flush_interval) if wait else self._queue.get_nowait()]
        except queue.Empty:
            return []
        if wait and not self._stopping.is_set():
            # Let a batch gather instead of committing each event as it comes: a transaction per
            # event costs this thread CPU (and the GIL) that the scheduler's loop needs.
            self._stopping.wait(BATCH_LINGER)
        while len(batch) < self.settings.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _handle(self, batch: list[Event]) -> None:
        if self.spool.pending_events or not self._database_up():
            # Behind older events, in order: the database gets them from the spool.
            if batch:
                self._to_spool(batch)
            if self.spool.pending_events and self._database_up():
                self._replay_one_batch()
            self._remind()
            return
        if batch:
            try:
                self._store.write(batch)  # type: ignore[union-attr]
            except (sa.exc.SQLAlchemyError, HistoryError) as exc:
                self._went_down(exc)
                self._to_spool(batch)
                return
            self.stats.written += len(batch)

    def _database_up(self) -> bool:
        if self.db_state == "ok":
            return True
        now = time.monotonic()
        if now < self._next_attempt:
            return False
        try:
            self._store.check()  # type: ignore[union-attr]
        except (sa.exc.SQLAlchemyError, HistoryError, OSError) as exc:
            self._went_down(exc)
            return False
        if self.db_state == "down":
            log.warning("Task history database %s is reachable again after %.0fs; replaying %d spooled event(s)",
                        describe(self.settings), now - self._down_since, self.spool.pending_events)
        self.db_state = "ok"
        self.last_error = None
        return True

    def _went_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._next_attempt = now + self.settings.retry_interval
        self.last_error = _short_error(exc)
        if self.db_state != "down":
            self._down_since = self._last_reminder = now
            log.error("TASK HISTORY DEGRADED: database %s unavailable (%s). Events are spooled to %s and written "
                      "when it is back; /healthz reports degraded. Retrying every %.0fs.",
                      describe(self.settings), self.last_error, self.spool.path, self.settings.retry_interval)
        self.db_state = "down"

    def _remind(self) -> None:
        now = time.monotonic()
        if self.db_state == "down" and now - self._last_reminder >= REMINDER_INTERVAL:
            self._last_reminder = now
            log.error("TASK HISTORY DEGRADED for %.0fs: %s; %d event(s) in the spool (%d of %d bytes)",
                      now - self._down_since, self.last_error, self.spool.pending_events, self.spool.size,
                      self.spool.limit)

    def _to_spool(self, batch: list[Event]) -> None:
        if not batch:
            return
        try:
            stored = self.spool.append(batch)
        except OSError as exc:
            self._spool_drops.add(len(batch), f"writing {self.spool.path} failed: {exc}")
            return
        if stored:
            self.stats.spooled += len(batch)
        else:
            first = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(batch[0].ts))
            self._spool_drops.add(len(batch), f"first lost event of this batch at {first}")

    def _replay_one_batch(self) -> None:
        events, end = self.spool.next_batch(self.settings.batch_size)
        try:
            self._store.write(events)  # type: ignore[union-attr]
        except (sa.exc.SQLAlchemyError, HistoryError) as exc:
            self._went_down(exc)
            return
        self.spool.advance(end, len(events))
        self.stats.replayed += len(events)
        self.stats.written += len(events)
        if not self.spool.pending_events:
            log.warning("Task history spool replayed: the database is complete again")


def _short_error(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
