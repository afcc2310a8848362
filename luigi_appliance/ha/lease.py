"""The leader lease: a thread that takes the lease when it is free and renews it while leading.

Expiry is decided by the database clock (store.py); this host's monotonic clock gives the local
deadline after which the node stops acting as leader even if it has not heard from the database
(a paused process, a partition): the last successful renewal's start + lease_ttl.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2

from luigi_appliance.errors import ApplianceError
from luigi_appliance.ha.settings import HaSettings
from luigi_appliance.ha.store import HaStore, LeaseView

log = logging.getLogger(__name__)

# valid() turns False this fraction of lease_ttl before the local deadline: the margin for a
# write checked as valid to reach the database (whose fence stays the actual guarantee).
_VALID_MARGIN = 0.2
# A takeover waits this long for an in-flight fenced append to commit (RESEARCH.md §1), then retries.
_LOCK_TIMEOUT = "1s"

__all__ = ["LeaseKeeper", "LeaseView"]


class LeaseKeeper:
    """Takes and keeps the lease for this node (one thread, one connection of its own).

    Standby: every renew_every, reads the lease and, while ``may_acquire`` is True (the node clears
    it while it loads or reloads its state), takes it when it is free, expired or held under this
    node's name: then ``on_acquired(epoch, previous)``. Leader: renews every renew_every; a refusal
    calls ``on_lost(reason)`` at once; database errors are retried until the local deadline passes,
    then ``on_lost``. Losing the lease clears ``may_acquire``. Callbacks run in the keeper's thread.
    """

    def __init__(self, settings: HaSettings, store: HaStore, connect: Callable[[], Any], *,
                 on_acquired: Callable[[int, LeaseView | None], None], on_lost: Callable[[str], None]):
        self._settings = settings
        self._store = store
        self._connect = connect
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self.may_acquire = True
        self._conn: Any = None
        self._epoch: int | None = None
        self._deadline = 0.0
        self._view: LeaseView | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._release_requested = False
        self._resign_requested = False
        self._released = threading.Event()
        self._failing_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="ha-lease", daemon=True)

    @property
    def epoch(self) -> int | None:
        """The epoch this node leads, or None."""
        return self._epoch

    def start(self) -> None:
        self._thread.start()

    def valid(self) -> bool:
        """Leading, and the local deadline is not near: the node may serve a write."""
        return self._epoch is not None and time.monotonic() < self._deadline - _VALID_MARGIN * self._settings.lease_ttl

    def view(self) -> LeaseView | None:
        """The lease as last read (or as this node holds it), None before the first read."""
        return self._view

    def release(self) -> None:
        """Give the lease up (clean stop): the standby takes over at its next check. Stops the thread's
        work; waits at most lease_ttl (past it the lease expires anyway)."""
        self._release_requested = True
        self._wake.set()
        if self._thread.is_alive():
            self._released.wait(self._settings.lease_ttl)

    def resign(self) -> None:
        """Give the lease back at once but keep checking it as a standby would: the node cannot
        lead (it won the lease while loading, or stepped down by itself). The node clears
        ``may_acquire`` first and sets it again once it may lead."""
        self._resign_requested = True
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread (the lease, if held, is left to expire) and wait for it."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self._settings.lease_ttl + self._settings.connect_timeout)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping and not self._release_requested:
                started = time.monotonic()
                if self._resign_requested:
                    self._resign_requested = False
                    self._release()
                self._tick(started)
                wait = self._settings.renew_every - (time.monotonic() - started)
                if self._epoch is not None:  # wake at the deadline to give up on time
                    wait = min(wait, self._deadline - time.monotonic())
                self._wake.wait(max(0.0, wait))
                self._wake.clear()
            if self._release_requested:
                self._release()
        finally:
            self._released.set()
            self._close()

    def _tick(self, started: float) -> None:
        try:
            conn = self._connection()
            if self._epoch is None:
                self._try_acquire(conn, started)
            else:
                self._renew(conn, started)
            if self._failing_since is not None:
                log.info("The HA database answers the lease again after %.1fs", time.monotonic() - self._failing_since)
                self._failing_since = None
        except (psycopg2.Error, ApplianceError) as exc:
            self._failed(exc)
        if self._epoch is not None and time.monotonic() >= self._deadline:
            self._lose(f"the lease of epoch {self._epoch} could not be renewed within lease_ttl = "
                       f"{self._settings.lease_ttl:g}s (the HA database did not answer)")

    def _try_acquire(self, conn: Any, started: float) -> None:
        s = self._settings
        view = self._store.lease(conn)
        self._view = view
        ours = view.node == s.node_name
        if not self.may_acquire or (view.live and not ours and view.node):
            return
        if ours and view.live and view.url != s.advertise_url:
            log.warning("The lease is held under this node's name %r by %s (epoch %d): taking it over; two "
                        "nodes with the same [ha] node_name take the lease from each other", s.node_name,
                        view.url, view.epoch)
        epoch = self._store.acquire(conn, s.node_name, s.advertise_url or "", s.lease_ttl)
        if epoch is None:
            return
        self._deadline = started + s.lease_ttl
        self._epoch = epoch
        self._view = LeaseView(s.node_name, s.advertise_url or "", epoch, s.lease_ttl)
        self._on_acquired(epoch, view)

    def _renew(self, conn: Any, started: float) -> None:
        s = self._settings
        assert self._epoch is not None
        if self._store.renew(conn, s.node_name, self._epoch, s.lease_ttl):
            self._deadline = started + s.lease_ttl
            self._view = LeaseView(s.node_name, s.advertise_url or "", self._epoch, s.lease_ttl)
            return
        view = self._store.lease(conn)
        self._view = view
        taken = f"{view.node} holds epoch {view.epoch}" if view.epoch != self._epoch else "it expired"
        self._lose(f"the lease of epoch {self._epoch} was not renewed: {taken}")

    def _lose(self, reason: str) -> None:
        self._epoch = None
        self._deadline = 0.0
        # The node reloads its state before it may lead again, and sets may_acquire back then.
        self.may_acquire = False
        self._on_lost(reason)

    def _release(self) -> None:
        epoch = self._epoch
        if epoch is None:
            return
        self._epoch = None
        try:
            self._store.release(self._connection(), self._settings.node_name, epoch)
        except (psycopg2.Error, ApplianceError) as exc:
            log.warning("Could not release the lease of epoch %d (it expires in lease_ttl): %s", epoch, exc)

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            with conn.cursor() as cur:
                cur.execute(f"SET lock_timeout = '{_LOCK_TIMEOUT}'")
                cur.execute(f"SET statement_timeout = {int(self._settings.lease_ttl * 1000)}")
            self._conn = conn
        return self._conn

    def _failed(self, exc: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("The HA lease could not be %s: %s", "renewed" if self._epoch is not None else "checked",
                        " ".join(str(exc).split()))
        if self._conn is not None and self._conn.closed:
            self._conn = None

    def _close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None
