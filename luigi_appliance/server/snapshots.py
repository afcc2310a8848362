"""The scheduler's signed snapshots, written every interval and once more at shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tornado.ioloop import PeriodicCallback

from luigi_appliance import state
from luigi_appliance.errors import StateError
from luigi_appliance.server.forked import fork_job, wait_job
from luigi_appliance.server.lifecycle import Component
from luigi_appliance.server.worker_bindings import WorkerBindings

log = logging.getLogger(__name__)


@dataclass
class SnapshotStats:
    """Since the process started, for /metrics (metrics/catalog.py snapshot_*): Unix times."""

    started: float = field(default_factory=time.time)
    # 0 before the first snapshot written.
    last_success: float = 0.0
    failures: int = 0


class Snapshotter(Component):
    """Writes signed snapshots from a forked child (server/forked.py), so that pickling a large
    state never stops the loop; at shutdown, in the process itself."""

    name = "snapshots"

    def __init__(self, scheduler: Any, store: state.StateStore, bindings: WorkerBindings, interval: float):
        self._scheduler = scheduler
        self._store = store
        self._bindings = bindings
        self._waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._timer = PeriodicCallback(self.periodic, interval * 1000)
        self._busy = False
        self._ok = True
        self.stats = SnapshotStats()

    def start(self) -> None:
        self._timer.start()

    async def periodic(self) -> None:
        if self._busy:
            return  # the previous snapshot is still being written; never queue them up
        self._busy = True
        try:
            await self._write_snapshot()
            self._mark(True)
        except (StateError, OSError) as exc:
            self._mark(False, exc)
        finally:
            self._busy = False

    async def _write_snapshot(self) -> None:
        generation = self._store.next_generation()
        bindings = self._bindings.export()
        loop = asyncio.get_running_loop()
        try:
            child = fork_job(lambda: self._store.write(self._store.encode(self._scheduler, bindings, generation)))
        except OSError as exc:
            # No fork (out of memory or processes): the snapshot still matters more than the pause.
            log.warning("Cannot fork to write the state snapshot (%s); pickling it on the scheduler's loop",
                        exc.strerror)
            encoded = self._store.encode(self._scheduler, bindings, generation)
            await loop.run_in_executor(self._waiter, self._store.write, encoded)
            return
        problem = await loop.run_in_executor(self._waiter, wait_job, child)
        if problem is not None:
            raise StateError(problem)

    def close(self) -> None:
        """Stop the interval and write the final snapshot (after any write still under way)."""
        self._timer.stop()
        self._waiter.shutdown(wait=True)
        try:
            generation = self._store.next_generation()
            self._store.write(self._store.encode(self._scheduler, self._bindings.export(), generation))
            self.stats.last_success = time.time()
            log.info("Saved final state snapshot %s", self._store.path)
        except (StateError, OSError) as exc:
            self.stats.failures += 1
            log.error("Final state snapshot failed: %s", exc)

    def healthy(self) -> bool:
        return self._ok

    def _mark(self, ok: bool, exc: Exception | None = None) -> None:
        if not ok:
            self.stats.failures += 1
            log.error("State snapshot failed (will retry at the next interval): %s", exc)
        else:
            self.stats.last_success = time.time()
            if not self._ok:
                log.info("State snapshots are being written again")
        self._ok = ok
