"""What ``serve`` needs from the history, enabled or not, behind one small object.

It composes the parts: the recorder luigi's scheduler reports to (:mod:`.recorder`), the writer
thread behind it (:mod:`.writer`), the pages' reader (:mod:`.reader`, :mod:`.pages`), and the
status all of them are reported by (:mod:`.status`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from luigi_appliance.history.settings import HistorySettings
from luigi_appliance.history.status import Counters, HistoryStatus

if TYPE_CHECKING:
    from luigi.task_history import TaskHistory

    from luigi_appliance.history.reader import HistoryReader
    from luigi_appliance.history.recorder import HistoryRecorder
    from luigi_appliance.history.writer import HistoryWriter


@dataclass(frozen=True)
class _Parts:
    """The history's parts when [history] is configured."""

    recorder: HistoryRecorder
    writer: HistoryWriter
    reader: HistoryReader

    def status(self) -> HistoryStatus:
        # Not one atomic read: the writer moves an event from the queue to ``held`` in two
        # steps, so for that instant it may be missing from ``queued``.
        recorder, writer, spool, counters = self.recorder, self.writer, self.writer.spool, self.writer.counters
        return HistoryStatus(
            backend=writer.settings.backend, database=writer.database, database_state=writer.db_state,
            last_error=writer.last_error, queued=recorder.queue.qsize() + writer.held,
            spool_events=spool.pending_events, spool_bytes=spool.size, spool_limit_bytes=spool.limit,
            emitted=counters.emitted, written=counters.written, spooled=counters.spooled, replayed=counters.replayed,
            dropped=recorder.drops.count + writer.dropped, dead_lettered=writer.dead_lettered,
            writer_alive=writer.alive,
            recent_losses=any(losses.recent() for losses in (recorder.drops, *writer.losses)))


class HistoryRuntime:
    """The scheduler's task history (recorder, writer thread, page reader), or its absence.

    Without [history] configured: no thread, always healthy, and the pages say history is not
    enabled. Nothing here connects to the database; the writer thread does, after ``start()``.
    """

    def __init__(self, settings: HistorySettings, state_dir: Path):
        self.settings = settings
        self._parts: _Parts | None = None
        if settings.enabled:
            # Imported only when enabled: SQLAlchemy and the pages stay out of a history-less scheduler.
            from luigi_appliance.history.reader import HistoryReader
            from luigi_appliance.history.recorder import HistoryRecorder
            from luigi_appliance.history.writer import HistoryWriter

            counters = Counters()
            recorder = HistoryRecorder(settings.queue_size, counters)
            self._parts = _Parts(recorder, HistoryWriter(settings, state_dir, recorder.queue, counters),
                                 HistoryReader(settings))

    @property
    def task_history(self) -> TaskHistory | None:
        """Luigi's TaskHistory for ``Scheduler(task_history_impl=...)``; None without [history]."""
        return self._parts.recorder if self._parts is not None else None

    def start(self) -> None:
        """Start the writer thread (it never waits for the database)."""
        if self._parts is not None:
            self._parts.writer.start()

    def status(self) -> HistoryStatus | None:
        """The history now, for the status API, the metrics and /healthz; None without [history]."""
        return self._parts.status() if self._parts is not None else None

    def healthy(self) -> bool:
        """False while the history is degraded (see HistoryStatus.healthy); True without it."""
        status = self.status()
        return status is None or status.healthy

    def routes(self) -> list[tuple[str, type, dict[str, Any]]]:
        """The history pages' routes, for app.build_app (they answer 404 without [history])."""
        from luigi_appliance.history.pages import HistorySource, routes

        parts = self._parts
        return routes(HistorySource(parts.reader, parts.status) if parts is not None else None)

    def close(self) -> None:
        """Stop the pages' queries, then flush the queue and stop the writer."""
        if self._parts is not None:
            self._parts.reader.close()
            self._parts.writer.close()
