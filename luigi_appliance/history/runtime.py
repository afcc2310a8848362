"""What ``serve`` needs from the history, enabled or not, behind one small object."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from luigi_appliance.history.settings import HistorySettings

log = logging.getLogger(__name__)


class HistoryRuntime:
    """The scheduler's task history (service, writer thread, page reader), or its absence.

    Without [history] configured: no thread, always healthy, and the pages say history is not
    enabled. Nothing here connects to the database; the writer thread does, after ``start()``.
    """

    def __init__(self, settings: HistorySettings, state_dir: Path):
        self.settings = settings
        self.service: Any = None
        self.reader: Any = None
        if settings.enabled:
            # Imported only when enabled: SQLAlchemy and the pages stay out of a history-less scheduler.
            from luigi_appliance.history.pages import HistoryReader
            from luigi_appliance.history.service import HistoryService

            self.service = HistoryService(settings, state_dir)
            self.reader = HistoryReader(self.service)

    def attach(self, scheduler: Any) -> None:
        """Make ``scheduler`` (a luigi Scheduler) report to this history.

        luigi only builds its own DbTaskHistory from ``record_task_history``; the appliance sets
        the history object directly instead, and the flag only for the ``has_task_history`` RPC
        (the visualiser shows its history link when it is true).
        """
        if self.service is None:
            return
        scheduler._task_history = self.service
        scheduler._config.record_task_history = True

    def start(self) -> None:
        if self.service is not None:
            self.service.start()

    def healthy(self) -> bool:
        return self.service is None or self.service.healthy

    def routes(self) -> list[tuple[str, type, dict[str, Any]]]:
        from luigi_appliance.history.pages import routes

        return routes(self.reader)

    def close(self) -> None:
        if self.service is not None:
            self.reader.close()
            self.service.close()
