"""The history's writer thread: batches from the recorder's queue into the database, or the spool.

One writer thread takes batches off the queue (:mod:`.recorder` fills it) and stores them
(:class:`EventStore`). While the database is unreachable, failing or at the wrong schema
revision, batches go to the spool file instead (fsync'd) and /healthz says ``degraded``; when
the database is back the spool is replayed in order before any newer event, so the order in the
database is the order the scheduler emitted.

An error of the database is either an outage (connection, timeout, permissions, schema revision:
the batch is spooled and the database tried again every ``retry_interval``) or a refusal of the
data (:func:`_refused`): then the batch is split in halves until the refused event is alone,
which is set aside in the dead-letter file (:mod:`.deadletter`) while everything else is written.

Events are lost only when the queue (``queue_size``) or the spool (``spool_limit``) is full, or
the spool or dead-letter file cannot be written (disk full): the ``spool_full`` policy
(``drop-new``) drops the new events, counts them (metric
``luigi_appliance_history_events_dropped_total``) and logs an error at once and then every
minute while it lasts. A SIGKILL loses the events still in the queue, at most about
``flush_interval`` + ``BATCH_LINGER`` of them, like the state snapshot loses at most one interval.

``held`` counts the events this thread has taken off the queue and not yet stored, spooled, set
aside or dropped (a batch lingering, or its statement waiting for the database): the status adds
them to ``queued``, so every emitted event is in one count.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from luigi_appliance.errors import HistoryError
from luigi_appliance.history.clean import clean_event
from luigi_appliance.history.db import describe, make_engine
from luigi_appliance.history.deadletter import DEAD_LETTER_NAME, DeadLetters
from luigi_appliance.history.events import Event
from luigi_appliance.history.settings import HistorySettings
from luigi_appliance.history.spool import SPOOL_NAME, Spool
from luigi_appliance.history.status import REMINDER_INTERVAL, Counters, DatabaseState, LossLog, dropped_events
from luigi_appliance.history.store import EventStore
from luigi_appliance.journald.fields import of_kind

log = logging.getLogger(__name__)

# How long the writer waits after the first event of a batch for more to arrive (seconds).
BATCH_LINGER = 0.1
# How many set-aside uids the writer remembers (see HistoryWriter._set_aside_uids).
_SET_ASIDE_MEMORY = 100_000


class HistoryWriter:
    """The thread that empties ``events`` into the database, the spool or the dead-letter file.

    Its state (``db_state``, ``last_error``, ``held``, the spool, ``losses``) is written by the
    thread and read by the status snapshot on the loop (single attribute reads: no lock needed).
    """

    def __init__(self, settings: HistorySettings, state_dir: Path, events: queue.Queue[Event], counters: Counters):
        self.settings = settings
        self.database = describe(settings)
        self.counters = counters
        self.spool = Spool(state_dir / SPOOL_NAME, settings.spool_limit)
        self.dead_letters = DeadLetters(state_dir / DEAD_LETTER_NAME, settings.spool_limit)
        self._queue = events
        self._spool_drops = dropped_events(f"the spool {self.spool.path} is full or cannot be written ([history] "
                                           f"spool_limit = {settings.spool_limit} bytes, spool_full = "
                                           f"{settings.spool_full})")
        self._dead_letter_drops = dropped_events(f"the database refused them and the dead-letter file "
                                                 f"{self.dead_letters.path} is full or cannot be written")
        self._refusals = LossLog("TASK HISTORY EVENTS REFUSED", "set aside",
                                 f"the database refused them; they are in {self.dead_letters.path}")
        self._error_drops = dropped_events("the history writer failed unexpectedly while handling them")
        # Uids set aside by this process: a batch replayed again after an outage in the middle of
        # its split does not set the same event aside twice.
        self._set_aside_uids: set[str] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._store: EventStore | None = None
        self.db_state: DatabaseState = "starting"
        self.last_error: str | None = None
        self._down_since = 0.0
        self._next_attempt = 0.0
        self._last_reminder = 0.0
        self._last_unexpected = -REMINDER_INTERVAL
        self._last_offset_error = -REMINDER_INTERVAL
        # Taken off the queue and in none of the counters yet: counted up as each event is taken,
        # down only after the counter it moves to (written, spooled, dropped, dead-lettered) has.
        self.held = 0

    # ---- state ---------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the writer thread runs."""
        return self._thread.is_alive()

    @property
    def losses(self) -> tuple[LossLog, ...]:
        """The events this thread dropped or set aside, by cause."""
        return self._spool_drops, self._dead_letter_drops, self._refusals, self._error_drops

    @property
    def dropped(self) -> int:
        """Events this thread lost (spool or dead-letter file full or not writable, or a batch an
        unexpected error left unhandled)."""
        return self._spool_drops.count + self._dead_letter_drops.count + self._error_drops.count

    @property
    def dead_lettered(self) -> int:
        """Events the database refused, kept in the dead-letter file."""
        return self._refusals.count

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the spool left by a previous run and start the writer. Never touches the database
        here: the scheduler starts and serves with the database down."""
        self.spool.open()
        if self.settings.backend == "postgresql" and self.settings.is_insecure:
            log.warning("INSECURE: task history database %s is reached with sslmode=%s ([history] allow_insecure "
                        "= true): its identity is not verified", self.database, self.settings.sslmode)
        self._store = EventStore(make_engine(self.settings, pool_size=1), owns_schema=self.settings.backend == "sqlite")
        self._thread.start()
        log.info("Task history: %s (events queued in memory, written by a background thread)", self.database)

    def close(self) -> None:
        """Flush the queue (to the database, or to the spool) and stop the writer."""
        self._stopping.set()
        timeout = self.settings.connect_timeout + self.settings.statement_timeout + 5
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("Task history writer did not finish within %.0fs: %d queued event(s) are lost",
                      timeout, self._queue.qsize() + self.held)
        elif self._store is not None:
            self._store.engine.dispose()

    # ---- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            # Replaying the spool: take what is queued without waiting, so replay runs at full speed.
            batch = self._next_batch(wait=not (self.spool.pending_events and self.db_state == "ok"))
            try:
                self._handle(batch)
            except Exception as exc:  # the writer must survive anything, or history stops silently
                self._unexpected(exc)
            finally:
                self._release_held()
        log.info("Task history writer stopped: %d written, %d in the spool", self.counters.written,
                 self.spool.pending_events)

    def _next_batch(self, wait: bool) -> list[Event]:
        try:
            batch = [self._queue.get(timeout=self.settings.flush_interval) if wait else self._queue.get_nowait()]
        except queue.Empty:
            return []
        self.held = 1
        if wait and not self._stopping.is_set():
            # Let a batch gather instead of committing each event as it comes: a transaction per
            # event costs this thread CPU (and the GIL) that the scheduler's loop needs.
            self._stopping.wait(BATCH_LINGER)
        while len(batch) < self.settings.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
            self.held += 1
        return batch

    def _handle(self, batch: list[Event]) -> None:
        up = self._database_up()  # also when idle: a database down at startup is seen and reported
        if batch:
            if up and not self.spool.pending_events:
                batch = self._store_events(batch, replay=False)
            # Behind older events (the database gets them from the spool, in order), or what an
            # outage left unwritten.
            self._to_spool(batch)
        if self.spool.pending_events and self._database_up():
            self._replay_one_batch()
        self._remind()

    def _store_events(self, events: list[Event], *, replay: bool) -> list[Event]:
        """Write ``events``, setting aside those the database refuses (halving the batch until a
        refused event is alone). Returns the events left unwritten because the database went down,
        in order (empty when all were handled)."""
        kept = [e for e in events if e.uid not in self._set_aside_uids]
        self._settled(len(events) - len(kept), replay=replay)  # already counted as dead-lettered
        events = kept
        try:
            stored = self._store.write(events)  # type: ignore[union-attr]
        except Exception as exc:
            if not _refused(exc):
                self._went_down(exc)
                return events
            if len(events) == 1:
                self._set_aside(events[0], exc)
                self._settled(1, replay=replay)
                return []
            half = len(events) // 2
            left = self._store_events(events[:half], replay=replay)
            return left + events[half:] if left else self._store_events(events[half:], replay=replay)
        self.counters.written += stored
        if replay:
            self.counters.replayed += stored
        self._settled(len(events), replay=replay)
        return []

    def _settled(self, count: int, *, replay: bool) -> None:
        """``count`` events of the queue's batch are now in a counter; a replayed batch was never
        held (the spool counts it)."""
        if not replay:
            self.held -= count

    def _release_held(self) -> None:
        # Whatever of the batch an unexpected error left in no counter is lost: counted as
        # dropped, so emitted still adds up.
        if self.held > 0:
            self._error_drops.add(self.held, f"the last error: {self.last_error}")
        self.held = 0

    def _set_aside(self, event: Event, exc: BaseException) -> None:
        if len(self._set_aside_uids) >= _SET_ASIDE_MEMORY:
            self._set_aside_uids.clear()  # at worst, one event is set aside twice
        self._set_aside_uids.add(event.uid)
        reason = _short_error(exc)
        detail = f"{reason}; {event.event_name} of task {event.task_id[:100]!a}"
        try:
            kept = self.dead_letters.add(event, reason)
        except OSError as err:
            self._dead_letter_drops.add(1, f"{detail}; writing it failed: {err}")
            return
        if kept:
            self._refusals.add(1, detail)
        else:
            self._dead_letter_drops.add(1, f"{detail}; the file is at its limit of {self.dead_letters.limit} bytes")

    def _database_up(self) -> bool:
        if self.db_state == "ok":
            return True
        now = time.monotonic()
        if now < self._next_attempt:
            return False
        try:
            self._store.check()  # type: ignore[union-attr]
        except Exception as exc:
            self._went_down(exc)
            return False
        if self.db_state == "down":
            log.warning("Task history database %s is reachable again after %.0fs; replaying %d spooled event(s)",
                        self.database, now - self._down_since, self.spool.pending_events)
        self.db_state = "ok"
        self.last_error = None
        return True

    def _went_down(self, exc: BaseException) -> None:
        """Spool from now on and try the database again in ``retry_interval``."""
        if not isinstance(exc, _OUTAGE):
            self._unexpected(exc)
            return
        self._back_off(exc)

    def _unexpected(self, exc: BaseException) -> None:
        # Neither an outage nor refused data: a bug, or a fault of the spool file (damaged while
        # running: a restart sets it aside). Logged with its traceback at most once a minute, and
        # retried only after retry_interval.
        now = time.monotonic()
        if now - self._last_unexpected >= REMINDER_INTERVAL:
            self._last_unexpected = now
            log.error("Task history writer: unexpected error; it retries in %.0fs", self.settings.retry_interval,
                      exc_info=exc)
        self._back_off(exc)

    def _back_off(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._next_attempt = now + self.settings.retry_interval
        self.last_error = _short_error(exc)
        if self.db_state != "down":
            self._down_since = self._last_reminder = now
            log.error("TASK HISTORY DEGRADED: database %s unavailable (%s). Events are spooled to %s and written "
                      "when it is back; /healthz reports degraded. Retrying every %.0fs.",
                      self.database, self.last_error, self.spool.path, self.settings.retry_interval,
                      extra=of_kind("history_degraded"))
        self.db_state = "down"

    def _remind(self) -> None:
        now = time.monotonic()
        if self.db_state == "down" and now - self._last_reminder >= REMINDER_INTERVAL:
            self._last_reminder = now
            log.error("TASK HISTORY DEGRADED for %.0fs: %s; %d event(s) in the spool (%d of %d bytes)",
                      now - self._down_since, self.last_error, self.spool.pending_events, self.spool.size,
                      self.spool.limit, extra=of_kind("history_degraded"))

    def _to_spool(self, batch: list[Event]) -> None:
        if not batch:
            return
        try:
            stored = self.spool.append(batch)
        except OSError as exc:
            self._spool_drops.add(len(batch), f"writing {self.spool.path} failed: {exc}")
        else:
            if stored:
                self.counters.spooled += len(batch)
            else:
                first = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(batch[0].ts))
                self._spool_drops.add(len(batch), f"first lost event of this batch at {first}")
        self._settled(len(batch), replay=False)

    def _replay_one_batch(self) -> None:
        events, end = self.spool.next_batch(self.settings.batch_size)
        # Cleaned again: a spool left by an older version holds events as they came.
        left = self._store_events([clean_event(e) for e in events], replay=True)
        if left:
            return  # the database went down: this batch is replayed again (stored events are skipped)
        try:
            self.spool.advance(end, len(events))
        except OSError as exc:
            self._offset_not_saved(exc)
        if not self.spool.pending_events:
            log.warning("Task history spool replayed: the database is complete again")

    def _offset_not_saved(self, exc: OSError) -> None:
        # The database has the batch and the spool moved on in memory; only a restart before the
        # next successful save replays it again, and the database then skips it (same uids).
        now = time.monotonic()
        if now - self._last_offset_error >= REMINDER_INTERVAL:
            self._last_offset_error = now
            log.error("Task history: the replay offset %s cannot be saved (%s); replay goes on, and after a "
                      "restart the events since the last saved offset are replayed again (stored once)",
                      self.spool.offset_path, exc)


# The database cannot be used right now (down, unreachable, timed out, permissions, wrong schema
# revision): spool, and try again later.
_OUTAGE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.ProgrammingError, sa.exc.InternalError,
           sa.exc.NotSupportedError, sa.exc.DisconnectionError, sa.exc.TimeoutError, sa.exc.ResourceClosedError,
           HistoryError, OSError)


def _refused(exc: BaseException) -> bool:
    """True when this data is refused (by the database, or by the driver before sending it):
    writing the same events again would fail again."""
    if isinstance(exc, sa.exc.DBAPIError):
        return isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError)) and not exc.connection_invalidated
    if isinstance(exc, sa.exc.StatementError):
        return True  # raised while binding a value
    # psycopg2 raises ValueError for a NUL itself, UnicodeEncodeError (a ValueError) for a
    # surrogate; TypeError, OverflowError, KeyError: a value the code could not handle.
    return isinstance(exc, (ValueError, TypeError, ArithmeticError, LookupError))


def _short_error(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    # Driver messages may quote the data: a lone surrogate in a log line would break the handler.
    line = f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
    return line.encode("utf-8", "backslashreplace").decode("utf-8")
