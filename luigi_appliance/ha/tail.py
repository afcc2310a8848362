"""The standby's journal reader: LISTEN for the leader's commits, poll as a fallback, deliver in order.

A notification carries nothing: it only wakes the reader, which always reads by position, so a
notification lost while reconnecting costs at most poll_interval.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
from psycopg2 import sql

from luigi_appliance.errors import ApplianceError
from luigi_appliance.ha.store import HaStore, JournalRow

log = logging.getLogger(__name__)

CHUNK = 2000
_TRANSIENT = (psycopg2.Error, ApplianceError)
_MAX_BACKOFF = 2.0


class JournalCompacted(ApplianceError):
    """Rows after the position asked for were deleted by a compaction: load the snapshot instead."""

    def __init__(self, after_pos: int, deleted_through: int):
        self.deleted_through = deleted_through
        super().__init__(f"the journal was compacted through position {deleted_through}, past {after_pos}: "
                         "load the snapshot")


def _read_chunk(conn: Any, store: HaStore, after_pos: int) -> list[JournalRow]:
    """Rows after ``after_pos``; JournalCompacted if some of them may have been deleted already."""
    rows = store.read_after(conn, after_pos, CHUNK)
    # Read after the rows: compaction deletes and raises deleted_through in one statement, so the
    # rows were complete unless it went past after_pos and the first row read is beyond it.
    deleted = store.deleted_through(conn)
    if deleted > after_pos and (not rows or rows[0].pos > deleted):
        raise JournalCompacted(after_pos, deleted)
    return rows


def read_rest(conn: Any, store: HaStore, after_pos: int) -> list[JournalRow]:
    """Every journal row after ``after_pos``, in order (blocking; at promotion and at load).
    JournalCompacted when some of them were deleted."""
    rows: list[JournalRow] = []
    while True:
        chunk = _read_chunk(conn, store, rows[-1].pos if rows else after_pos)
        if not chunk:
            return rows
        rows += chunk


class JournalTail:
    """Reads the journal after a position and hands the rows, in order, to ``deliver`` (which may
    block: the reader waits for it). ``on_compacted(deleted_through)`` when rows not delivered yet
    were deleted by a compaction: the thread then ends (the node reloads the snapshot and starts a
    new tail). Connection errors: reconnect, LISTEN again, read what was missed."""

    def __init__(self, connect: Callable[[], Any], store: HaStore, poll_interval: float,
                 deliver: Callable[[list[JournalRow]], None], on_compacted: Callable[[int], None]):
        self._connect = connect
        self._store = store
        self._poll_interval = poll_interval
        self._deliver = deliver
        self._on_compacted = on_compacted
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="ha-tail", daemon=True)
        self.applied_pos = 0
        self.db_last_pos = 0
        self.error: Exception | None = None

    def start(self, after_pos: int) -> None:
        """Deliver the rows after ``after_pos``, then every row committed later."""
        self.applied_pos = self.db_last_pos = after_pos
        self._thread.start()

    def stop(self) -> None:
        """Stop reading and wait for the thread (not from within ``deliver``)."""
        if self._stopping:
            return
        self._stopping = True
        if not self._thread.is_alive():
            self._close_pipe()  # never started, or ended already: the thread closed nothing
            return
        os.write(self._wake_w, b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join()
            self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass  # closed already

    def _run(self) -> None:
        conn: Any = None
        backoff = 0.1
        failing_since: float | None = None
        try:
            while not self._stopping:
                try:
                    if conn is None:
                        conn = self._listen()
                    self._drain(conn)
                    if failing_since is not None:
                        log.info("Reading the journal again after %.1fs", time.monotonic() - failing_since)
                        failing_since, backoff = None, 0.1
                    self._wait(conn, self._poll_interval)
                except JournalCompacted as exc:
                    self._on_compacted(exc.deleted_through)
                    return
                except _TRANSIENT as exc:
                    if failing_since is None:
                        failing_since = time.monotonic()
                        log.warning("Cannot read the journal, retrying: %s", " ".join(str(exc).split()))
                    if conn is not None and not conn.closed:
                        conn.close()
                    conn = None
                    self._wait(None, backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
        except Exception as exc:  # deliver or on_compacted failed: the node sees .error
            self.error = exc
            log.exception("The journal reader stopped")
        finally:
            if conn is not None and not conn.closed:
                conn.close()

    def _listen(self) -> Any:
        conn = self._connect()
        with conn.cursor() as cur:
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._store.channel)))
        return conn

    def _drain(self, conn: Any) -> None:
        """Deliver every row after the applied position (chunk by chunk), then note the journal's end."""
        while not self._stopping:
            conn.notifies.clear()  # what is read now covers them
            rows = _read_chunk(conn, self._store, self.applied_pos)
            if not rows:
                break
            self.db_last_pos = max(self.db_last_pos, rows[-1].pos)
            self._deliver(rows)
            self.applied_pos = rows[-1].pos
        self.db_last_pos = max(self.applied_pos, self._store.last_pos(conn))

    def _wait(self, conn: Any, timeout: float) -> None:
        """Until a notification, stop(), or ``timeout``."""
        if conn is not None and conn.notifies:
            return  # arrived during the last statement: already off the socket, select would not see it
        readable, _, _ = select.select([self._wake_r] if conn is None else [conn, self._wake_r], [], [], timeout)
        if conn is not None and conn in readable:
            conn.poll()
