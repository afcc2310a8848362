"""The history's state and counters: what /history/api/status, /history/metrics and /healthz read.

:class:`Counters` and :class:`LossLog` are kept up to date by the recorder (on the scheduler's
loop) and the writer thread; :class:`HistoryStatus` is one consistent-enough snapshot of them,
taken when a page or the health check asks. No SQLAlchemy here: the health check imports it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

# How often a lasting problem (database down, events dropped) is logged again.
REMINDER_INTERVAL = 60.0

# starting: not tried yet; ok: takes events; down: spooling, tried again every retry_interval.
DatabaseState = Literal["starting", "ok", "down"]


@dataclass
class Counters:
    """Counters since the scheduler started (exposed on /history/api/status and /history/metrics).

    ``emitted`` is counted by the recorder, the rest by the writer thread. ``written`` counts
    rows stored (an event found already stored is not counted again); ``replayed`` is the part
    of it that came from the spool. Dropped and set-aside events are counted by their LossLog.

    Every emitted event is in exactly one place, so (spool events left by an earlier run aside)
    ``emitted`` = ``written`` + spool events pending + ``queued`` (the queue and the batch the
    writer holds) + ``dropped`` + ``dead_lettered``: once ``queued`` and the spool are 0, the
    database has ``written`` of them.
    """

    emitted: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0


class LossLog:
    """Events lost or set aside, counted, and logged as an ERROR: the first at once, then one
    line a minute while it goes on."""

    def __init__(self, headline: str, outcome: str, what: str):
        self.headline = headline
        self.outcome = outcome
        self.what = what
        self.count = 0
        self.unreported = 0
        self.last_log = 0.0
        self.last_drop: float | None = None

    def recent(self) -> bool:
        """True for a minute after the last loss (the history reports degraded meanwhile)."""
        return self.last_drop is not None and time.monotonic() - self.last_drop < REMINDER_INTERVAL

    def add(self, count: int, detail: str) -> None:
        """Count ``count`` more events lost, ``detail`` saying which and why."""
        self.count += count
        self.unreported += count
        now = self.last_drop = time.monotonic()
        if self.unreported == self.count or now - self.last_log >= REMINDER_INTERVAL:
            log.error("%s: %d event(s) %s (%d in total) because %s (%s)",
                      self.headline, self.unreported, self.outcome, self.count, self.what, detail)
            self.unreported = 0
            self.last_log = now


def dropped_events(what: str) -> LossLog:
    """The LossLog of events not recorded at all because ``what``."""
    return LossLog("TASK HISTORY EVENTS DROPPED", "not recorded", what)


@dataclass(frozen=True)
class HistoryStatus:
    """The history at one moment: the writer's state, the queue and spool, the counters.

    ``queued`` is the events in the in-memory queue plus those the writer has taken off it and
    not yet stored, spooled, set aside or dropped (HistoryWriter.held).
    """

    backend: str
    database: str
    database_state: DatabaseState
    last_error: str | None
    queued: int
    spool_events: int
    spool_bytes: int
    spool_limit_bytes: int
    emitted: int
    written: int
    spooled: int
    replayed: int
    dropped: int
    dead_lettered: int
    writer_alive: bool
    recent_losses: bool

    @property
    def healthy(self) -> bool:
        """False while the database is down, events wait in the spool, the writer thread is gone,
        or events were just dropped or set aside."""
        return (self.database_state != "down" and self.spool_events == 0 and self.writer_alive
                and not self.recent_losses)

    @property
    def state(self) -> Literal["ok", "degraded"]:
        return "ok" if self.healthy else "degraded"

    def to_json(self) -> dict[str, Any]:
        """The body of /history/api/status (its keys and their order are part of the API)."""
        return {
            "backend": self.backend,
            "database": self.database,
            "state": self.state,
            "database_state": self.database_state,
            "last_error": self.last_error,
            "queued": self.queued,
            "spool_events": self.spool_events,
            "spool_bytes": self.spool_bytes,
            "spool_limit_bytes": self.spool_limit_bytes,
            "emitted": self.emitted,
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "dead_lettered": self.dead_lettered,
        }


# /history/api/status without [history] configured.
DISABLED_JSON: dict[str, Any] = {"backend": "none", "state": "disabled"}
