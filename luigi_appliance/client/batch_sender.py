"""add_tasks batches sent from one background thread, in order, while luigi's worker goes on
building the graph (client/remote.py hands them over)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from luigi_appliance.client.task_batches import Batch

# Batches handed over and not sent yet: enough to keep the scheduler busy while the worker
# builds the next, few enough that a refusal leaves little built in vain.
QUEUED_BATCHES = 4


class BatchSender:
    """Sends each batch with ``send``, one at a time in the order given, on its own thread.

    The first exception ``send`` raises stops it: what was queued after is dropped unsent, and
    ``submit`` and ``drain`` raise that exception from then on, in the caller's thread.
    """

    def __init__(self, send: Callable[[Batch], None]):
        self._send = send
        self._queue: queue.Queue[Batch | None] = queue.Queue(QUEUED_BATCHES)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, batch: Batch) -> None:
        """Queue ``batch`` (waiting while the queue is full); raise an earlier batch's failure."""
        self._raise_failure()
        if self._thread is None:
            # Started on first use: a worker forked for a task never gets a thread it cannot use.
            self._thread = threading.Thread(target=self._run, name="add_tasks-sender", daemon=True)
            self._thread.start()
        self._queue.put(batch)

    def drain(self) -> None:
        """Wait until every queued batch is sent; raise the failure that stopped the sending."""
        if self._thread is not None:
            self._queue.join()
        self._raise_failure()

    def stop(self) -> None:
        """End the thread once the queue is empty (``drain`` first to send what is queued)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if self._error is None:
                    self._send(batch)
            except BaseException as exc:  # raised in the worker's thread, at its next call
                self._error = exc
            finally:
                self._queue.task_done()
