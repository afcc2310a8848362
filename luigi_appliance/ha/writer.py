"""The leader's journal writer: records appended on the IOLoop, committed by one thread in groups.

The loop never waits on the database: ``append`` queues a record and returns its sequence number;
``committed`` awaits an asyncio future that the thread resolves through
``loop.call_soon_threadsafe`` once the record's batch committed. The thread takes everything queued
(up to max_batch) into one fenced INSERT (store.py). A lost connection is retried with the same
batch until it goes through or the writer is stopped: rows are unique by (epoch, seq), so a batch
that did commit before the connection broke is not written twice. A fenced batch (another epoch
holds the lease) fails every waiter with NotLeader and calls ``on_fenced`` on the loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2

from luigi_appliance.errors import ApplianceError
from luigi_appliance.ha.store import HaStore, encode_record

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# Errors of the connection or the server's state (restart, failover, timeout): retried.
_TRANSIENT = (psycopg2.OperationalError, psycopg2.InterfaceError, ApplianceError)
_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 1.0


class NotLeader(Exception):
    """This node's journal does not take records (any more): stopped, or fenced by a newer epoch."""


@dataclass
class WriterStats:
    """For /metrics; updated on the loop."""

    records: int = 0
    batches: int = 0
    last_batch_size: int = 0
    commit_seconds: float = 0.0  # in total
    last_commit_seconds: float = 0.0


@dataclass(frozen=True)
class _Mark:
    future: asyncio.Future[int]


@dataclass(frozen=True)
class _SaveSnapshot:
    blob: bytes
    pos: int
    delete_through: int
    future: asyncio.Future[bool]


class _Halted(Exception):
    """The writer was stopped while the thread waited for the database."""


class _Refused(Exception):
    """The database refused the batch for good (fenced, or an error retrying cannot cure)."""


_STOP = object()
_Row = tuple[int, float, str]


class JournalWriter:
    """Group commit of one epoch's journal (see the module docstring). Loop thread only, except
    the thread it starts."""

    def __init__(self, connect: Callable[[], Any], store: HaStore, max_batch: int, loop: asyncio.AbstractEventLoop,
                 on_fenced: Callable[[str], None], on_batch: Callable[[int, float], None] | None = None):
        self._connect = connect
        self._store = store
        self._max_batch = max_batch
        self._loop = loop
        self._on_fenced = on_fenced
        self.on_batch = on_batch
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._halt = threading.Event()
        self._epoch = 0
        self._seq = 0
        self._committed = 0
        self._order = itertools.count()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._pending: set[asyncio.Future[Any]] = set()
        self._stopped: str | None = "the journal writer is not started"
        self._thread: threading.Thread | None = None
        # The thread's own.
        self._conn: Any = None
        self._last_pos: int | None = None
        self._failing_since: float | None = None

    @property
    def epoch(self) -> int:
        return self._epoch

    def start(self, epoch: int) -> None:
        """Write ``epoch``'s journal, sequence numbers from 1."""
        if self._thread is not None:
            raise RuntimeError("a JournalWriter writes one epoch; make a new one")
        self._epoch = epoch
        self._stopped = None
        self._thread = threading.Thread(target=self._run, name=f"ha-journal-{epoch}", daemon=True)
        self._thread.start()

    def stop(self, reason: str) -> None:
        """Take no more records; every waiter gets NotLeader(reason). Does not wait for the thread
        (it may be blocked on the database): it ends at its next step."""
        if self._stopped is not None:
            return
        self._stopped = reason
        self._halt.set()
        self._queue.put(_STOP)
        error = NotLeader(reason)
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()
        for pending in self._pending:
            if not pending.done():
                pending.set_exception(error)
        self._pending.clear()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (not on the loop: it may be blocked on the database)."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def last_pos(self) -> int | None:
        """The journal position of the last record committed in this epoch (None before one)."""
        return self._last_pos

    def append(self, at: float, rec: dict[str, Any]) -> int:
        """Queue ``rec`` (stamped ``at``) and return its sequence number; never blocks.

        NotLeader once stopped or fenced; ValueError/TypeError for a record JSON cannot hold."""
        if self._stopped is not None:
            raise NotLeader(self._stopped)
        text = encode_record(rec)  # here, so that a later change of rec's objects cannot alter it
        self._seq += 1
        self._queue.put((self._seq, at, text))
        return self._seq

    async def committed(self, seq: int | None = None) -> None:
        """Return once every record up to ``seq`` (default: the last appended) is committed; NotLeader
        if the writer is stopped or fenced first."""
        seq = self._seq if seq is None else seq
        if seq > self._seq:
            raise ValueError(f"record {seq} was not appended (the last is {self._seq})")
        if seq <= self._committed:
            return
        if self._stopped is not None:
            raise NotLeader(self._stopped)
        future: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._waiters, (seq, next(self._order), future))
        await future

    def mark(self) -> asyncio.Future[int]:
        """A future of the journal position of the last record appended before this call, once it is
        committed (with none yet in this epoch: the journal's last position before it)."""
        future: asyncio.Future[int] = self._loop.create_future()
        self._submit(_Mark(future), future)
        return future

    async def save_snapshot(self, blob: bytes, pos: int, delete_through: int) -> bool:
        """Store the snapshot (it includes the journal through ``pos``), after every record appended
        before; delete the rows through ``delete_through`` (<= pos). False when fenced."""
        if delete_through > pos:
            raise ValueError(f"delete_through {delete_through} is past the snapshot's position {pos}")
        future: asyncio.Future[bool] = self._loop.create_future()
        self._submit(_SaveSnapshot(blob, pos, delete_through, future), future)
        return await future

    def _submit(self, item: Any, future: asyncio.Future[Any]) -> None:
        if self._stopped is not None:
            future.set_exception(NotLeader(self._stopped))
            return
        self._pending.add(future)
        self._queue.put(item)

    # -- on the loop, called by the thread -----------------------------------------------------

    def _on_commit(self, last_seq: int, marks: list[tuple[asyncio.Future[int], int]], size: int,
                   seconds: float) -> None:
        self._committed = max(self._committed, last_seq)
        while self._waiters and self._waiters[0][0] <= self._committed:
            future = heapq.heappop(self._waiters)[2]
            if not future.done():
                future.set_result(None)
        for mark, pos in marks:
            self._pending.discard(mark)
            if not mark.done():
                mark.set_result(pos)
        if size:
            self.stats.records += size
            self.stats.batches += 1
            self.stats.last_batch_size = size
            self.stats.commit_seconds += seconds
            self.stats.last_commit_seconds = seconds
            if self.on_batch is not None:
                self.on_batch(size, seconds)

    def _on_saved(self, future: asyncio.Future[bool], ok: bool) -> None:
        self._pending.discard(future)
        if not future.done():
            future.set_result(ok)

    def _on_refused(self, reason: str) -> None:
        if self._stopped is not None:
            return
        self.stop(reason)
        self._on_fenced(reason)

    def _tell(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        item: Any = None
        try:
            while not self._halt.is_set():
                item = self._queue.get() if item is None else item
                if item is _STOP:
                    return
                if isinstance(item, _SaveSnapshot):
                    self._save(item)
                    item = None
                    continue
                rows, marks, item = self._collect(item)
                self._commit(rows, marks)
        except _Halted:
            pass
        except _Refused as exc:
            self._tell(self._on_refused, str(exc))
        except Exception as exc:  # a bug must not leave RPCs waiting forever
            log.exception("The journal writer of epoch %d failed", self._epoch)
            self._tell(self._on_refused, f"the journal writer failed: {type(exc).__name__}: {exc}")
        finally:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()

    def _collect(self, item: Any) -> tuple[list[_Row], list[tuple[int, asyncio.Future[int]]], Any]:
        """Records and marks queued from ``item`` on, up to max_batch records; the item that ends the
        batch (a snapshot or the stop) is returned to be handled next."""
        rows: list[_Row] = []
        marks: list[tuple[int, asyncio.Future[int]]] = []
        while True:
            if isinstance(item, _Mark):
                marks.append((len(rows), item.future))  # after the rows before it
            elif isinstance(item, tuple):
                rows.append(item)
            else:
                return rows, marks, item
            if len(rows) >= self._max_batch:
                return rows, marks, None
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return rows, marks, None

    def _commit(self, rows: list[_Row], marks: list[tuple[int, asyncio.Future[int]]]) -> None:
        started = time.perf_counter()
        positions: list[int] = []
        if rows:
            inserted = self._attempt(lambda conn: self._store.append(conn, self._epoch, rows))
            if inserted is None:
                raise _Refused(f"a newer epoch than {self._epoch} holds the lease")
            if len(inserted) == len(rows):
                positions = inserted
            else:  # an earlier attempt committed (part of) it before its connection broke
                seqs = [seq for seq, _, _ in rows]
                found = self._attempt(lambda conn: self._store.positions(conn, self._epoch, seqs))
                positions = [found[seq] for seq in seqs]
            self._last_pos = positions[-1]
        seconds = time.perf_counter() - started
        resolved = []
        for index, future in marks:
            if index:
                resolved.append((future, positions[index - 1]))
            else:
                resolved.append((future, self._position_before()))
        self._tell(self._on_commit, rows[-1][0] if rows else 0, resolved, len(rows), seconds)

    def _position_before(self) -> int:
        if self._last_pos is None:
            self._last_pos = self._attempt(self._store.last_pos)
        return self._last_pos

    def _save(self, request: _SaveSnapshot) -> None:
        ok = self._attempt(lambda conn: self._store.save_snapshot(conn, self._epoch, request.pos, request.blob,
                                                                  request.delete_through))
        self._tell(self._on_saved, request.future, ok)
        if not ok:
            raise _Refused(f"a newer epoch than {self._epoch} holds the lease (saving a snapshot)")

    def _attempt(self, operation: Callable[[Any], _T]) -> _T:
        """``operation`` on the connection, reconnecting and retrying after connection errors until
        it works or the writer is stopped (_Halted)."""
        backoff = _FIRST_BACKOFF
        while not self._halt.is_set():
            try:
                if self._conn is None:
                    self._conn = self._connect()
                result = operation(self._conn)
            except psycopg2.Error as exc:
                if not isinstance(exc, _TRANSIENT) and self._conn is not None and not self._conn.closed:
                    raise _Refused(f"the database refused the journal batch: {' '.join(str(exc).split())}") from exc
                self._failed(exc)
            except ApplianceError as exc:
                self._failed(exc)
            else:
                if self._failing_since is not None:
                    log.info("Journal writes of epoch %d go through again after %.1fs", self._epoch,
                             time.monotonic() - self._failing_since)
                    self._failing_since = None
                return result
            self._halt.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)
        raise _Halted

    def _failed(self, exc: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("Journal write of epoch %d failed, retrying until it goes through: %s", self._epoch,
                        " ".join(str(exc).split()))
        if self._conn is not None:
            if not self._conn.closed:
                self._conn.close()
            self._conn = None
