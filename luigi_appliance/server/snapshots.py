"""The scheduler's signed snapshots, written every interval and once more at shutdown."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tornado.ioloop import PeriodicCallback

from luigi_appliance import state
from luigi_appliance.errors import StateError
from luigi_appliance.server.lifecycle import Component
from luigi_appliance.server.worker_bindings import WorkerBindings

log = logging.getLogger(__name__)


class Snapshotter(Component):
    """Writes signed snapshots: pickled on the loop (a consistent view), written in a thread."""

    name = "snapshots"

    def __init__(self, scheduler: Any, store: state.StateStore, bindings: WorkerBindings, interval: float):
        self._scheduler = scheduler
        self._store = store
        self._bindings = bindings
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._timer = PeriodicCallback(self.periodic, interval * 1000)
        self._busy = False
        self._ok = True

    def start(self) -> None:
        self._timer.start()

    async def periodic(self) -> None:
        if self._busy:
            return  # the previous write is still fsyncing; never queue them up
        self._busy = True
        try:
            encoded = self._store.encode(self._scheduler, self._bindings.export())
            await asyncio.get_running_loop().run_in_executor(self._writer, self._store.write, encoded)
            self._mark(True)
        except (StateError, OSError) as exc:
            self._mark(False, exc)
        finally:
            self._busy = False

    def close(self) -> None:
        """Stop the interval and write the final snapshot (after any write still under way)."""
        self._timer.stop()
        self._writer.shutdown(wait=True)
        try:
            self._store.write(self._store.encode(self._scheduler, self._bindings.export()))
            log.info("Saved final state snapshot %s", self._store.path)
        except (StateError, OSError) as exc:
            log.error("Final state snapshot failed: %s", exc)

    def healthy(self) -> bool:
        return self._ok

    def _mark(self, ok: bool, exc: Exception | None = None) -> None:
        if not ok:
            log.error("State snapshot failed (will retry at the next interval): %s", exc)
        elif not self._ok:
            log.info("State snapshots are being written again")
        self._ok = ok
