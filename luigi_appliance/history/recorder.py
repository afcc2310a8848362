"""Luigi's TaskHistory for the scheduler: it only cleans an event and puts it on a queue.

The scheduler calls ``task_scheduled``/``task_started``/``task_finished`` on its IOLoop thread.
Each builds an :class:`Event`, cleaned once here (:mod:`.clean`: escaped, fitted to the columns),
and puts it on a bounded in-memory queue, nothing else: no I/O, no lock held by anything slow.
The writer thread (:mod:`.writer`) takes it from there. When the queue (``queue_size``) is full
the event is dropped, counted and logged (:class:`LossLog`).
"""

from __future__ import annotations

import itertools
import queue
import secrets
import time
from typing import Any

from luigi.task_history import TaskHistory
from luigi.task_status import DONE, FAILED, PENDING, RUNNING

from luigi_appliance.auth.context import current_caller
from luigi_appliance.history.clean import make_event
from luigi_appliance.history.events import Event
from luigi_appliance.history.status import Counters, dropped_events


class HistoryRecorder(TaskHistory):
    """What luigi's scheduler reports to (``Scheduler(task_history_impl=...)``): enqueue only.

    ``queue`` is read by the writer thread; ``drops`` counts the events the full queue refused.
    """

    def __init__(self, queue_size: int, counters: Counters):
        self.queue: queue.Queue[Event] = queue.Queue(maxsize=queue_size)
        self.counters = counters
        self.drops = dropped_events(f"the in-memory queue is full ([history] queue_size = {queue_size})")
        # Event uids: random per process, then a counter (uuid4 per event was a syscall on the
        # loop). 12 + at most 20 hex digits fit the 32-character column.
        self._uid_prefix = secrets.token_hex(6)
        self._uid_counter = itertools.count()

    def task_scheduled(self, task: Any) -> None:
        self._emit(task, PENDING)

    def task_started(self, task: Any, worker_host: str | None) -> None:
        self._emit(task, RUNNING, worker_host)

    def task_finished(self, task: Any, successful: bool) -> None:
        self._emit(task, DONE if successful else FAILED)

    def _emit(self, task: Any, event_name: str, host: str | None = None) -> None:
        caller = current_caller.get()
        uid = f"{self._uid_prefix}{next(self._uid_counter):x}"
        # Cleaned here, once: the writer and the spool only ever see storable events. Only the
        # public parameters, as luigi's own API shows them: a task's private and hidden ones
        # (passwords, tokens) must not reach the database or the history pages.
        event = make_event(uid, task.id, task.family or "", task.public_params, event_name, time.time(), host,
                           caller.principal.name if caller else None)
        self.counters.emitted += 1
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.drops.add(1, f"{event_name} of {event.task_id[:100]!a}")
