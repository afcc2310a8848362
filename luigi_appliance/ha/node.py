"""One scheduler of an [ha] pair: stands by, takes over, leads, steps down.

The lease (ha/lease.py) decides who leads; this node follows what it says:

- **starting**: the state is loaded from PostgreSQL (the last signed snapshot, then every journal
  record after it), retried while the database is unreachable. Nothing is served.
- **standby**: the journal is tailed (ha/tail.py) and applied to this node's own scheduler, with
  the leader's clock (ha/replay.py), so the state is warm. Every RPC answers 503 naming the leader.
- **promoting**: the lease was won with a new epoch; the rest of the journal is applied (the old
  leader can no longer append: its epoch is fenced in the database), then the node leads.
- **leader**: every state change is journalled (scheduler/journalled.py) through the group-commit
  writer (ha/writer.py) and acknowledged only once committed (server/guard.py); the state is
  compacted into a signed snapshot every ``compact_interval``.
- **fenced**: the lease was lost, or the database refused a write of this epoch. The node stops
  serving at once and reloads the state from the database (its memory may hold changes nobody
  acknowledged), then stands by again.

Everything here runs on the IOLoop; the lease keeper, the writer and the tail are threads whose
callbacks come back to the loop. Database reads of the boot and the takeover run in an executor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tornado.ioloop import PeriodicCallback

from luigi_appliance.errors import ApplianceError
from luigi_appliance.ha import records, replay, state_payload
from luigi_appliance.ha.db import connector
from luigi_appliance.ha.lease import LeaseKeeper, LeaseView
from luigi_appliance.ha.settings import HaSettings
from luigi_appliance.ha.status import NodeStatus
from luigi_appliance.ha.store import HaStore, JournalRow
from luigi_appliance.ha.tail import JournalTail, read_rest
from luigi_appliance.ha.writer import JournalWriter
from luigi_appliance.ha.writer import NotLeader as WriteRefused
from luigi_appliance.journald.fields import of_kind
from luigi_appliance.secret_values import write_private_file
from luigi_appliance.server.forked import fork_job, wait_job
from luigi_appliance.server.leadership import NotLeader
from luigi_appliance.server.lifecycle import Component
from luigi_appliance.server.snapshots import SnapshotStats

log = logging.getLogger(__name__)

# Records applied between two yields to the loop while catching up (health checks keep answering).
_APPLY_CHUNK = 500
# Pause between attempts to load the state while the database is unreachable.
_RELOAD_RETRY = 1.0


class _Sink:
    """Where the leader's scheduler and worker bindings append their records."""

    def __init__(self, node: HaNode, writer: JournalWriter):
        self._node = node
        self._writer = writer

    def append(self, at: float, rec: dict[str, Any]) -> int:
        self._node.appended_total += 1
        return self._writer.append(at, rec)

    def binding(self, op: str, worker_id: str, principal: str) -> None:
        at = time.time()
        self.append(at, records.binding(op, worker_id, principal, at))


class HaNode(Component):
    """The [ha] part of ``serve`` (see the module docstring); also the guard's Leadership."""

    name = "ha"

    def __init__(self, settings: HaSettings, scheduler: Any, bindings: Any, signing_key: bytes, state_dir: Path,
                 audit: Any = None):
        self._settings = settings
        self._scheduler = scheduler
        self._bindings = bindings
        self._key = signing_key
        self._scratch = state_dir / "ha-snapshot.tmp"
        self._audit = audit
        self._store = HaStore(settings.schema)
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ha-io")
        self._keeper = LeaseKeeper(settings, self._store, self._connector("lease"),
                                   on_acquired=self._lease_won, on_lost=self._lease_lost)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: JournalWriter | None = None
        self._tail: JournalTail | None = None
        self._compaction = PeriodicCallback(self._compact, settings.compact_interval * 1000)
        self._compacting = False
        self._closing = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self._keeper_started = False
        # One more at every reload: an apply that began before a reload stops applying.
        self._generation = 0
        self.role = "starting"
        self.epoch = 0
        self.detail: str | None = "loading the state from PostgreSQL"
        self.applied_pos = 0
        self.applied_at = 0.0
        self.snapshot_pos = 0
        self.appended_total = 0
        self.failovers = 0
        self.divergences = 0
        # The compaction's snapshots, for /metrics' snapshot_* (as the file snapshots' without [ha]).
        self.snapshot_stats = SnapshotStats()
        # Told True when this node starts leading and False when it stops (serve's timers).
        self.on_leading: list[Callable[[bool], None]] = []
        # Told (batch size, seconds) of every journal commit (metrics).
        self.on_commit: Callable[[int, float], None] | None = None

    def _connector(self, purpose: str) -> Callable[[], Any]:
        return connector(self._settings, f"luigi-appliance {self._settings.node_name} {purpose}")

    # -- Leadership (server/leadership.py) -------------------------------------------------

    def serving(self) -> bool:
        if self.role != "leader" or self._closing:
            return False
        if self._keeper.valid():
            return True
        # The lease ran out by this host's clock before the keeper heard it was taken: stop now,
        # whatever the database says later (a paused VM wakes up here).
        self._step_down("the lease expired before it could be renewed")
        return False

    def status(self) -> NodeStatus:
        view = self._keeper.view()
        leading = self.role == "leader"
        tail = self._tail
        db_last = tail.db_last_pos if tail is not None else self.applied_pos
        lag = 0 if leading else max(0, db_last - self.applied_pos)
        lag_seconds = 0.0 if lag == 0 or not self.applied_at else max(0.0, time.time() - self.applied_at)
        applied = self.applied_pos
        if leading and self._writer is not None and self._writer.last_pos is not None:
            applied = max(applied, self._writer.last_pos)  # the leader's own records, once committed
        if leading:
            leader, leader_url = self._settings.node_name, self._settings.advertise_url
        elif view is not None and view.node and view.expires_in > 0:
            leader, leader_url = view.node, view.url or None
        else:
            leader, leader_url = None, None
        return NodeStatus(role=self.role, node=self._settings.node_name, epoch=self.epoch,
                          leader=leader, leader_url=leader_url, applied_pos=applied, lag_records=lag,
                          lag_seconds=round(lag_seconds, 3), detail=self.detail, failovers=self.failovers,
                          journalled=self.appended_total, divergences=self.divergences)

    def appended(self) -> int:
        return self.appended_total

    async def committed(self) -> None:
        writer = self._writer
        if writer is None:
            raise NotLeader(f"this node is {self.role}, not the leader")
        try:
            await writer.committed()
        except WriteRefused as exc:
            raise NotLeader(str(exc)) from None

    # -- Component ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._keeper.may_acquire = False
        self._background(self._reload())

    def healthy(self) -> bool:
        return self.role in ("standby", "leader", "promoting")

    async def drain(self, timeout: float) -> None:
        """SIGTERM, before the parts close: serve nothing new, and let what was appended commit
        so that the replies still waiting for it go out as acknowledgements."""
        self._closing = True
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._writer.committed(), timeout)
            except (WriteRefused, asyncio.TimeoutError) as exc:
                log.warning("Stopping with journal records not committed (%s): their calls were not "
                            "acknowledged", type(exc).__name__)

    def close(self) -> None:
        """SIGTERM: hand the lease over at once (the standby need not wait for it to expire)."""
        self._closing = True
        self._compaction.stop()
        writer = self._writer
        self._scheduler.journal = None
        self._bindings.listener = None
        if writer is not None:
            # The listener is closed already: what was appended is committed or refused now.
            writer.stop("the scheduler is stopping")
            self._writer = None
        if self.role == "leader":
            self._keeper.release()
            log.warning("Stopped leading at epoch %d: lease released for the standby", self.epoch,
                        extra=of_kind("ha_failover"))
        if self._keeper_started:
            self._keeper.stop()
        if self._tail is not None:
            # Not joined here: the tail may be waiting for the loop (this thread) to apply rows.
            self._io.submit(self._tail.stop)
        self._io.shutdown(wait=False)

    # -- loading the state -------------------------------------------------------------------

    async def _reload(self) -> None:
        """Load the state from PostgreSQL (at boot, after being fenced, after compaction ran past
        this standby), then stand by. Retries while the database cannot be read."""
        loop = asyncio.get_running_loop()
        self._keeper.may_acquire = False
        self._generation += 1  # rows still being applied from before belong to the state replaced now
        if self.role == "standby":
            self.role, self.detail = "starting", "reloading the state from PostgreSQL"
        if self._tail is not None:
            tail, self._tail = self._tail, None
            await loop.run_in_executor(self._io, tail.stop)
        while not self._closing:
            try:
                snapshot, rows = await loop.run_in_executor(self._io, self._read_everything)
                payload = None
                if snapshot is not None:
                    payload = state_payload.decode(snapshot.blob, self._key)
                    if payload is None:
                        raise ApplianceError("the state snapshot in PostgreSQL does not verify with this node's "
                                             "[state] hmac key: both nodes must use the same key (docs/ha.md)")
                state_payload.install(self._scheduler, self._bindings, payload)
                self.applied_pos = self.snapshot_pos = snapshot.pos if snapshot is not None else 0
                self.applied_at = 0.0
                await self._apply_rows(rows)
                break
            except ApplianceError as exc:
                self.detail = str(exc)
                log.error("Cannot load the scheduler state from PostgreSQL: %s; trying again", exc)
            except Exception as exc:  # psycopg2's errors, unreachable database: retried, never fatal
                self.detail = f"cannot read the state from PostgreSQL: {type(exc).__name__}: {exc}"
                log.warning("%s; trying again in %.0fs", self.detail, _RELOAD_RETRY)
            await asyncio.sleep(_RELOAD_RETRY)
        if self._closing:
            return
        self.role, self.detail = "standby", None
        log.info("Standing by at journal position %d (%s)", self.applied_pos, self._leader_text())
        self._start_tail()
        self._keeper.may_acquire = True
        if not self._keeper_started:  # after the first load: the schema exists by then
            self._keeper_started = True
            self._keeper.start()

    def _read_everything(self) -> tuple[Any, list[JournalRow]]:
        conn = self._connector("load")()
        try:
            self._store.ensure_schema(conn)
            snapshot = self._store.snapshot(conn)
            rows = read_rest(conn, self._store, snapshot.pos if snapshot is not None else 0)
            return snapshot, rows
        finally:
            conn.close()

    def _start_tail(self) -> None:
        self._tail = JournalTail(self._connector("tail"), self._store, self._settings.poll_interval,
                                 deliver=self._delivered, on_compacted=self._compacted_past)
        self._tail.start(self.applied_pos)

    def _delivered(self, rows: list[JournalRow]) -> None:
        """The tail's thread: apply on the loop, and wait for it (the tail reads on afterwards)."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._apply_rows(rows), self._loop).result()

    def _compacted_past(self, deleted_through: int) -> None:
        assert self._loop is not None
        log.warning("The journal was compacted past this standby (position %d, deleted through %d): reloading "
                    "the snapshot", self.applied_pos, deleted_through)
        self._loop.call_soon_threadsafe(lambda: self._background(self._reload()))

    async def _apply_rows(self, rows: list[JournalRow]) -> None:
        generation = self._generation
        for index, row in enumerate(rows):
            if generation != self._generation:
                return  # the state was reloaded meanwhile: these rows are read again after it
            if row.pos <= self.applied_pos:
                continue  # already applied (a re-read after a reconnect)
            divergence = replay.apply(self._scheduler, self._bindings, row.rec)
            self.applied_pos, self.applied_at = row.pos, row.at
            if divergence is not None:
                self.divergences += 1
                log.error("Journal record %d replayed differently here than on the leader: %s", row.pos, divergence)
            if index % _APPLY_CHUNK == _APPLY_CHUNK - 1:
                await asyncio.sleep(0)

    # -- taking over -------------------------------------------------------------------------

    def _lease_won(self, epoch: int, previous: LeaseView | None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: self._background(self._promote(epoch, previous)))

    async def _promote(self, epoch: int, previous: LeaseView | None) -> None:
        loop = asyncio.get_running_loop()
        if self._closing or self.role != "standby":
            # Won while loading or reloading (the keeper only asks when allowed, but the two race):
            # hand the lease back rather than hold it with nobody serving.
            self._keeper.may_acquire = False
            self._keeper.resign()
            return
        started = time.monotonic()
        self.role, self.epoch, self.detail = "promoting", epoch, "applying the rest of the journal"
        if self._tail is not None:
            tail, self._tail = self._tail, None
            await loop.run_in_executor(self._io, tail.stop)
        try:
            rows = await loop.run_in_executor(self._io, self._read_rest)
        except Exception as exc:  # the database went away, or compaction went past this node (JournalCompacted)
            self._step_down(f"cannot read the journal to take over: {type(exc).__name__}: {exc}")
            return
        await self._apply_rows(rows)
        if self.role != "promoting" or self.epoch != epoch:
            return  # lost the lease meanwhile
        writer = JournalWriter(self._connector("journal"), self._store, self._settings.max_batch, loop,
                               on_fenced=self._write_refused)
        if self.on_commit is not None:
            writer.on_batch = self.on_commit
        writer.start(epoch)
        self._writer = writer
        sink = _Sink(self, writer)
        self._scheduler.journal = sink
        self._bindings.listener = sink.binding
        self.role, self.detail = "leader", None
        self._compaction.start()
        took = time.monotonic() - started
        before = f"{previous.node} at epoch {previous.epoch}" if previous is not None and previous.node else "nobody"
        if previous is not None and previous.node and previous.node != self._settings.node_name:
            self.failovers += 1
        log.warning("Leading at epoch %d (the lease was held by %s); applied the journal to position %d in %.2fs",
                    epoch, before, self.applied_pos, took, extra=of_kind("ha_failover"))
        self._audit_event("leader", epoch=epoch, previous_epoch=previous.epoch if previous else 0,
                          previous_node=previous.node if previous else "")
        for told in self.on_leading:
            told(True)

    def _read_rest(self) -> list[JournalRow]:
        conn = self._connector("takeover")()
        try:
            return read_rest(conn, self._store, self.applied_pos)
        finally:
            conn.close()

    # -- stepping down -----------------------------------------------------------------------

    def _lease_lost(self, reason: str) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._step_down, reason)

    def _write_refused(self, reason: str) -> None:
        self._step_down(f"the database refused a journal write of epoch {self.epoch}: {reason}")

    def _step_down(self, reason: str) -> None:
        """Stop serving now; reload the state (memory may hold changes nobody acknowledged)."""
        if self.role not in ("leader", "promoting") or self._closing:
            return
        was_leading = self.role == "leader"
        self.role, self.detail = "fenced", reason
        # The keeper may still hold the lease (this node noticed first): give it back, so the
        # standby need not wait for it to expire, and take it again only after the reload.
        self._keeper.may_acquire = False
        self._keeper.resign()
        self._scheduler.journal = None
        self._bindings.listener = None
        self._compaction.stop()
        if self._writer is not None:
            self._writer.stop(reason)
            self._writer = None
        log.warning("Stepped down at epoch %d: %s. Reloading the state from PostgreSQL before standing by",
                    self.epoch, reason, extra=of_kind("ha_failover"))
        self._audit_event("stepped_down", epoch=self.epoch, reason=reason)
        if was_leading:
            for told in self.on_leading:
                told(False)
        self._background(self._reload())

    # -- compaction --------------------------------------------------------------------------

    async def _compact(self) -> None:
        """A signed snapshot of the state into PostgreSQL, with the journal position it includes;
        journal rows up to the previous snapshot are deleted (a standby a little behind keeps its
        rows). Pickled in a forked child (server/forked.py): the loop never stops for it."""
        writer = self._writer
        if writer is None or self._compacting:
            return
        self._compacting = True
        loop = asyncio.get_running_loop()
        try:
            mark = writer.mark()  # the position of the last record applied to the state forked now
            scheduler, bindings, key, scratch = self._scheduler, self._bindings, self._key, self._scratch
            child = fork_job(lambda: write_private_file(
                scratch, state_payload.encode(state_payload.capture(scheduler, bindings), key)))
            pos = await mark
            problem = await loop.run_in_executor(self._io, wait_job, child)
            if problem is not None:
                raise ApplianceError(problem)
            blob = await loop.run_in_executor(self._io, scratch.read_bytes)
            os.unlink(scratch)
            if await writer.save_snapshot(blob, pos, self.snapshot_pos):
                log.info("Compacted the journal: snapshot at position %d (%d bytes), rows through %d deleted",
                         pos, len(blob), self.snapshot_pos)
                self.snapshot_pos = pos
                self.snapshot_stats.last_success = time.time()
        except WriteRefused:
            pass  # fenced: _write_refused steps down
        except (ApplianceError, OSError) as exc:
            self.snapshot_stats.failures += 1
            log.error("Journal compaction failed (the journal keeps growing until it works): %s", exc)
        finally:
            self._compacting = False

    # -- helpers -----------------------------------------------------------------------------

    def _background(self, work: Any) -> None:
        """Run ``work`` on the loop, keeping a reference until it ends (asyncio keeps only weak ones)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _leader_text(self) -> str:
        view = self._keeper.view()
        if view is None or not view.node:
            return "no leader yet"
        return f"leader {view.node} at epoch {view.epoch}, {view.url}"

    def _audit_event(self, outcome: str, **fields: Any) -> None:
        if self._audit is not None:
            self._audit.record("ha", principal=None, source=self._settings.node_name, outcome=outcome, **fields)
