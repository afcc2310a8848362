"""The HA building blocks against a real PostgreSQL 15 (tests/pg_cluster.py: TLS, scram): the lease
and its epoch fence (ha/store.py), the lease keeper (ha/lease.py), group commit (ha/writer.py) and
the standby's reader (ha/tail.py), including a database restart and a SIGSTOPped leader.

Each test has its own database; the scheduler's role may create the schema there, as in production.
Timings are short (lease_ttl 1 s) and every wait is bounded by the database's own clock or a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from pg_cluster import Database, PgCluster, as_postgres, pg_bin

from luigi_appliance.ha.db import connect
from luigi_appliance.ha.lease import LeaseKeeper
from luigi_appliance.ha.settings import HaSettings
from luigi_appliance.ha.store import HaStore, JournalRow, LeaseView
from luigi_appliance.ha.tail import JournalCompacted, JournalTail, read_rest
from luigi_appliance.ha.writer import JournalWriter, NotLeader

REPO = Path(__file__).resolve().parents[2]
TTL = 1.0


@pytest.fixture
def ha(pg: PgCluster, db: Database) -> HaSettings:
    """[ha] settings reaching ``db`` over TLS as the scheduler's role, which may create the schema."""
    db.query(f"GRANT CREATE ON DATABASE {db.name} TO {db.user}")
    return HaSettings(backend="postgresql", host="localhost", port=pg.port, dbname=db.name, user=db.user,
                      password_file=db.password_file, sslmode="verify-full", sslrootcert=pg.ca_file,
                      node_name="node-a", advertise_url="https://a.example.com:8082/", lease_ttl=TTL,
                      poll_interval=0.2, max_batch=50)


@pytest.fixture
def conns(ha: HaSettings) -> Iterator[Callable[[], Any]]:
    """Opens connections for a test and closes them all after it."""
    opened: list[Any] = []

    def open_one() -> Any:
        conn = connect(ha, "test_ha_store")
        opened.append(conn)
        return conn
    yield open_one
    for conn in opened:
        if not conn.closed:
            conn.close()


@pytest.fixture
def store(ha: HaSettings, conns: Callable[[], Any]) -> HaStore:
    s = HaStore(ha.schema)
    s.ensure_schema(conns())
    return s


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 10.0, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_expired(store: HaStore, conn: Any) -> None:
    """Until the lease expired by the database's clock (not by sleeping)."""
    wait_until(lambda: not store.lease(conn).live, "the lease to expire by the database clock")


def rows_of(db: Database) -> list[tuple[int, int, int]]:
    return db.query("SELECT pos, epoch, seq FROM luigi_ha.journal ORDER BY pos")


def restart_database(pg: PgCluster) -> None:
    """`pg_ctl restart -m immediate`: every connection is cut, nothing committed is lost."""
    as_postgres(pg_bin("pg_ctl"), "-D", str(pg.data), "-l", str(pg.log_file), "-m", "immediate", "-w", "-t", "60",
                "restart")


def row(seq: int, **rec: Any) -> tuple[int, float, str]:
    return (seq, time.time(), json.dumps({"seq": seq, **rec}))


# -- store: lease ------------------------------------------------------------------------------

def test_lease_acquire_renew_release_and_expiry_by_the_database_clock(store: HaStore, conns: Callable[[], Any],
                                                                     ha: HaSettings) -> None:
    conn = conns()
    assert store.lease(conn) == LeaseView("", "", 0, float("-inf"))
    epoch = store.acquire(conn, "node-a", "https://a/", TTL)
    assert epoch == 1
    view = store.lease(conn)
    assert (view.node, view.url, view.epoch) == ("node-a", "https://a/", 1) and 0 < view.expires_in <= TTL
    assert store.acquire(conn, "node-b", "https://b/", TTL) is None, "a live lease was taken"
    assert store.renew(conn, "node-a", 1, TTL)
    assert not store.renew(conn, "node-b", 1, TTL) and not store.renew(conn, "node-a", 2, TTL)
    wait_expired(store, conn)
    assert not store.renew(conn, "node-a", 1, TTL), "an expired lease was renewed"
    assert store.acquire(conn, "node-b", "https://b/", TTL) == 2
    store.release(conn, "node-a", 2)  # not a's: ignored
    assert store.lease(conn).live
    store.release(conn, "node-b", 2)
    assert store.lease(conn) == LeaseView("node-b", "https://b/", 2, float("-inf"))
    # Released: taken at once, no waiting for the ttl.
    assert store.acquire(conn, "node-a", "https://a/", TTL) == 3
    # Both nodes creating the tables again at start changes nothing.
    store.ensure_schema(conn)
    assert store.lease(conn).epoch == 3


def test_the_same_node_name_takes_its_own_live_lease_with_the_next_epoch(store: HaStore,
                                                                         conns: Callable[[], Any],
                                                                         db: Database) -> None:
    conn = conns()
    assert store.acquire(conn, "node-a", "https://a/", 60) == 1
    assert store.acquire(conn, "node-b", "https://b/", 60) is None
    assert store.acquire(conn, "node-a", "https://a/", 60) == 2  # restarted: fences its former self
    assert store.append(conn, 1, [row(1)]) is None
    assert store.append(conn, 2, [row(1)]) == [1]
    assert [(e, s) for _, e, s in rows_of(db)] == [(2, 1)]


# -- store: fenced append ----------------------------------------------------------------------

def test_append_is_fenced_by_the_epoch_idempotent_and_notifies_only_inserted_rows(
        store: HaStore, conns: Callable[[], Any], db: Database) -> None:
    conn, listener = conns(), conns()
    with listener.cursor() as cur:
        cur.execute(f"LISTEN {store.channel}")

    def notifications() -> int:
        listener.poll()
        count = len(listener.notifies)
        listener.notifies.clear()
        return count

    epoch = store.acquire(conn, "node-a", "https://a/", 60)
    assert epoch is not None
    positions = store.append(conn, epoch, [row(1), row(2), row(3)])
    assert positions is not None and len(positions) == 3 and positions == sorted(positions)
    assert wait_until(notifications, "a notification of the inserted rows", timeout=2) == 1
    # The batch retried after a lost connection: nothing new, not fenced, no notification.
    assert store.append(conn, epoch, [row(1), row(2), row(3)]) == []
    assert store.positions(conn, epoch, [1, 2, 3]) == dict(zip([1, 2, 3], positions, strict=True))
    # Partly new: only the new row is inserted.
    assert len(store.append(conn, epoch, [row(3), row(4)]) or []) == 1
    time.sleep(0.2)
    assert notifications() == 1
    # Taken over: the old epoch writes nothing, and nobody is notified.
    assert store.acquire(conn, "node-a", "https://a/", 60) == epoch + 1
    assert store.append(conn, epoch, [row(5)]) is None
    time.sleep(0.2)
    assert notifications() == 0
    assert [(e, s) for _, e, s in rows_of(db)] == [(epoch, 1), (epoch, 2), (epoch, 3), (epoch, 4)]
    rows = store.read_after(conn, positions[0], 10)
    assert [(r.seq, r.rec["seq"]) for r in rows] == [(2, 2), (3, 3), (4, 4)]
    assert store.last_pos(conn) == rows[-1].pos


def test_a_takeover_waits_for_an_append_still_in_flight(store: HaStore, conns: Callable[[], Any],
                                                        db: Database) -> None:
    """RESEARCH.md §1: the append's FOR SHARE on the lease row makes the takeover's UPDATE wait,
    so the new leader reads every row the old one committed."""
    leader, standby = conns(), conns()
    epoch = store.acquire(leader, "node-a", "https://a/", TTL)
    assert epoch == 1
    wait_expired(store, standby)
    leader.autocommit = False  # the append "still executing": in a transaction not committed yet
    assert store.append(leader, epoch, [row(1)]) == [1]
    with standby.cursor() as cur:
        cur.execute("SET lock_timeout = '500ms'")
    with pytest.raises(psycopg2.errors.LockNotAvailable):
        store.acquire(standby, "node-b", "https://b/", TTL)
    leader.commit()
    assert store.acquire(standby, "node-b", "https://b/", TTL) == 2
    assert [r.seq for r in read_rest(standby, store, 0)] == [1], "the new leader missed an acknowledged row"
    leader.autocommit = True
    assert store.append(leader, epoch, [row(2)]) is None
    assert [(e, s) for _, e, s in rows_of(db)] == [(1, 1)]


def test_a_snapshot_is_fenced_and_deletes_the_journal_through_the_given_position(
        store: HaStore, conns: Callable[[], Any]) -> None:
    conn = conns()
    epoch = store.acquire(conn, "node-a", "https://a/", 60)
    assert epoch is not None
    positions = store.append(conn, epoch, [row(n) for n in range(1, 6)])
    assert positions is not None
    assert store.snapshot(conn) is None and store.deleted_through(conn) == 0
    assert store.save_snapshot(conn, epoch, positions[3], b"state-1", positions[1])
    snap = store.snapshot(conn)
    assert snap is not None
    assert (snap.pos, snap.epoch, snap.blob, snap.deleted_through) == (positions[3], epoch, b"state-1", positions[1])
    assert [r.pos for r in store.read_after(conn, 0, 10)] == positions[2:]
    with pytest.raises(JournalCompacted):
        read_rest(conn, store, positions[0])
    assert [r.pos for r in read_rest(conn, store, positions[1])] == positions[2:]
    with pytest.raises(ValueError, match="past the snapshot"):
        store.save_snapshot(conn, epoch, positions[0], b"x", positions[1])
    # A newer epoch: the old one can neither replace the snapshot nor delete rows.
    assert store.acquire(conn, "node-a", "https://a/", 60) == epoch + 1
    assert not store.save_snapshot(conn, epoch, positions[4], b"state-2", positions[4])
    snap = store.snapshot(conn)
    assert snap is not None and snap.blob == b"state-1"
    assert [r.pos for r in store.read_after(conn, 0, 10)] == positions[2:]
    # Everything deleted: the last position is still known.
    assert store.save_snapshot(conn, epoch + 1, positions[4], b"state-3", positions[4])
    assert store.read_after(conn, 0, 10) == [] and store.last_pos(conn) == positions[4]


# -- writer ------------------------------------------------------------------------------------

def run_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """An asyncio loop in a thread of its own, as the server's IOLoop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def on_loop(loop: asyncio.AbstractEventLoop, coro: Any, timeout: float = 30) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop, thread = run_loop()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def writer_for(ha: HaSettings, store: HaStore, loop: asyncio.AbstractEventLoop, epoch: int,
               fenced: list[str] | None = None) -> JournalWriter:
    """A writer of ``epoch``, started on the loop (its loop-side methods are the loop's only)."""
    writer = JournalWriter(lambda: connect(ha, "test writer"), store, ha.max_batch, loop,
                           on_fenced=(fenced if fenced is not None else []).append)

    async def start() -> None:
        writer.start(epoch)
    on_loop(loop, start())
    return writer


async def append_committed(writer: JournalWriter, rec: dict[str, Any]) -> int:
    seq = writer.append(time.time(), rec)
    await writer.committed(seq)
    return seq


def test_concurrent_appends_share_commits_and_all_resolve(ha: HaSettings, store: HaStore, conns: Callable[[], Any],
                                                          loop: asyncio.AbstractEventLoop, db: Database) -> None:
    epoch = store.acquire(conns(), "node-a", "https://a/", 60)
    assert epoch is not None
    writer = writer_for(ha, store, loop, epoch)
    batches: list[int] = []
    writer.on_batch = lambda size, seconds: batches.append(size)

    async def burst() -> tuple[list[int], int]:
        seqs = await asyncio.gather(*(append_committed(writer, {"n": n}) for n in range(200)))
        return list(seqs), await writer.mark()

    seqs, mark = on_loop(loop, burst())
    assert sorted(seqs) == list(range(1, 201))
    assert 1 < len(batches) < 200 and sum(batches) == 200 and max(batches) <= 50, batches
    assert writer.stats.records == 200 and writer.stats.batches == len(batches)
    rows = rows_of(db)
    assert [s for _, _, s in rows] == list(range(1, 201)) and {e for _, e, _ in rows} == {epoch}
    assert mark == rows[-1][0]
    # A snapshot goes through the writer, after what was appended before it.
    on_loop(loop, append_committed(writer, {"n": 200}))
    assert on_loop(loop, writer.save_snapshot(b"blob", mark, rows[99][0]))
    assert len(rows_of(db)) == 101
    loop.call_soon_threadsafe(writer.stop, "test over")


def test_a_fenced_writer_fails_every_waiter_and_says_so(ha: HaSettings, store: HaStore, conns: Callable[[], Any],
                                                        loop: asyncio.AbstractEventLoop, db: Database) -> None:
    conn = conns()
    epoch = store.acquire(conn, "node-a", "https://a/", 60)
    assert epoch is not None
    fenced: list[str] = []
    writer = writer_for(ha, store, loop, epoch, fenced)
    on_loop(loop, append_committed(writer, {"n": 0}))
    assert store.acquire(conn, "node-b", "https://b/", 60) is None
    assert store.acquire(conn, "node-a", "https://a/", 60) == epoch + 1  # a restart of node-a took it

    async def after_takeover() -> list[Any]:
        seqs = [writer.append(time.time(), {"n": n}) for n in range(1, 20)]
        return await asyncio.gather(*(writer.committed(s) for s in seqs), writer.mark(), return_exceptions=True)

    outcomes = on_loop(loop, after_takeover())
    assert outcomes and all(isinstance(o, NotLeader) for o in outcomes), outcomes
    assert len(fenced) == 1 and f"newer epoch than {epoch}" in fenced[0]
    async def late() -> int:
        return writer.append(time.time(), {"late": True})

    with pytest.raises(NotLeader):
        on_loop(loop, late())
    assert [(e, s) for _, e, s in rows_of(db)] == [(epoch, 1)]


def test_writer_and_tail_carry_on_across_a_database_restart(ha: HaSettings, store: HaStore, pg: PgCluster,
                                                            conns: Callable[[], Any], loop: asyncio.AbstractEventLoop,
                                                            db: Database, caplog: pytest.LogCaptureFixture) -> None:
    """pg_ctl restart -m immediate under a steady load: every acknowledged record is in the journal
    exactly once, and the standby's reader delivers all of them, in order."""
    epoch = store.acquire(conns(), "node-a", "https://a/", 600)
    assert epoch is not None
    delivered: list[JournalRow] = []
    tail = JournalTail(lambda: connect(ha, "test tail"), store, 0.2, delivered.extend, lambda d: None)
    tail.start(0)
    writer = writer_for(ha, store, loop, epoch)
    acknowledged: list[int] = []
    stop = asyncio.Event()

    async def client(n: int) -> None:
        while not stop.is_set():
            acknowledged.append(await append_committed(writer, {"client": n}))
            await asyncio.sleep(0.01)

    async def load() -> None:
        clients = [asyncio.ensure_future(client(n)) for n in range(5)]
        await asyncio.sleep(0.5)
        before = len(acknowledged)
        await asyncio.get_running_loop().run_in_executor(None, restart_database, pg)
        deadline = time.monotonic() + 15
        while len(acknowledged) < before + 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*clients)

    caplog.set_level(logging.INFO, logger="luigi_appliance.ha")
    on_loop(loop, load(), timeout=60)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "luigi_appliance.ha.writer"]
    assert len([m for level, m in said if level == "WARNING"]) == 1, said  # once per outage, not per retry
    assert said[-1][0] == "INFO" and "go through again" in said[-1][1], said
    rows = rows_of(db)
    seqs = [s for _, _, s in rows]
    assert len(seqs) == len(set(seqs)), "a retried batch was written twice"
    assert set(acknowledged) <= set(seqs), "an acknowledged record is missing"
    assert len(acknowledged) > 100
    wait_until(lambda: len(delivered) == len(rows), "the tail to deliver every row after the restart")
    assert [r.pos for r in delivered] == [p for p, _, _ in rows]
    assert tail.db_last_pos == rows[-1][0]
    tail.stop()
    loop.call_soon_threadsafe(writer.stop, "test over")


# -- tail --------------------------------------------------------------------------------------

def test_the_tail_delivers_by_notification_at_once_and_by_polling_without_one(
        ha: HaSettings, store: HaStore, conns: Callable[[], Any]) -> None:
    conn = conns()
    epoch = store.acquire(conn, "node-a", "https://a/", 600)
    assert epoch is not None
    store.append(conn, epoch, [row(1)])
    arrived: list[tuple[float, JournalRow]] = []
    compacted: list[int] = []

    def deliver(rows: list[JournalRow]) -> None:
        arrived.extend((time.monotonic(), r) for r in rows)

    tail = JournalTail(lambda: connect(ha, "test tail"), store, 5.0, deliver, compacted.append)
    tail.start(0)
    wait_until(lambda: len(arrived) == 1, "the row written before the start")
    # Notified: well within a second although the poll interval is 5 s.
    sent = time.monotonic()
    store.append(conn, epoch, [row(2), row(3)])
    wait_until(lambda: len(arrived) == 3, "rows notified", timeout=1.0)
    assert arrived[-1][0] - sent < 1.0
    # Without a notification (a row inserted behind the journal's back, as if the NOTIFY was lost):
    # found by the next poll.
    with conn.cursor() as cur:
        cur.execute("INSERT INTO luigi_ha.journal (epoch, seq, at, rec) VALUES (%s, 4, 0, '{}')", (epoch,))
    time.sleep(1.0)
    assert len(arrived) == 3, "delivered without a notification before the poll"
    wait_until(lambda: len(arrived) == 4, "the polled row", timeout=6)
    assert [r.seq for _, r in arrived] == [1, 2, 3, 4]
    assert tail.applied_pos == arrived[-1][1].pos and compacted == []
    tail.stop()


def test_the_tail_hands_over_when_the_journal_was_compacted_past_it(
        ha: HaSettings, store: HaStore, conns: Callable[[], Any]) -> None:
    conn = conns()
    epoch = store.acquire(conn, "node-a", "https://a/", 600)
    assert epoch is not None
    positions = store.append(conn, epoch, [row(1), row(2), row(3)])
    assert positions is not None
    store.save_snapshot(conn, epoch, positions[1], b"s", positions[1])
    compacted: list[int] = []
    tail = JournalTail(lambda: connect(ha, "test tail"), store, 0.2, lambda rows: None, compacted.append)
    tail.start(positions[0])
    wait_until(lambda: compacted, "on_compacted")
    assert compacted == [positions[1]]
    tail.stop()


# -- lease keeper ------------------------------------------------------------------------------

class Told:
    """A keeper's callbacks, recorded."""

    def __init__(self) -> None:
        self.acquired: list[tuple[int, LeaseView | None]] = []
        self.lost: list[str] = []

    def on_acquired(self, epoch: int, previous: LeaseView | None) -> None:
        self.acquired.append((epoch, previous))

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)


def keeper_for(ha: HaSettings, store: HaStore, told: Told) -> LeaseKeeper:
    return LeaseKeeper(ha, store, lambda: connect(ha, f"test lease {ha.node_name}"), on_acquired=told.on_acquired,
                       on_lost=told.on_lost)


def test_two_keepers_one_leader_release_hands_over_at_once(ha: HaSettings, store: HaStore) -> None:
    a_told, b_told = Told(), Told()
    a = keeper_for(ha, store, a_told)
    b = keeper_for(replace(ha, node_name="node-b", advertise_url="https://b.example.com:8082/"), store, b_told)
    b.may_acquire = False
    a.start()
    b.start()
    wait_until(lambda: a_told.acquired, "node-a to lead")
    assert a_told.acquired[0][0] == 1 and a.valid() and a.epoch == 1
    b.may_acquire = True
    time.sleep(3 * TTL)  # renewed all along: b never gets it
    assert b_told.acquired == [] and a_told.lost == [] and a.valid()
    view = b.view()
    assert view is not None and (view.node, view.url) == ("node-a", "https://a.example.com:8082/")
    released = time.monotonic()
    a.release()
    assert not a.valid()
    wait_until(lambda: b_told.acquired, "node-b to take the released lease")
    assert time.monotonic() - released < TTL, "the standby waited for expiry after a release"
    epoch, previous = b_told.acquired[0]
    assert epoch == 2 and previous is not None and previous.node == "node-a" and not previous.live
    a.stop()
    b.stop()
    assert a_told.lost == []


def test_a_leader_steps_down_when_refused_or_when_the_database_is_gone_past_its_lease(
        ha: HaSettings, store: HaStore, pg: PgCluster, conns: Callable[[], Any]) -> None:
    told = Told()
    keeper = keeper_for(ha, store, told)
    keeper.start()
    try:
        wait_until(lambda: told.acquired, "the keeper to lead")
        # Taken over (here: node-a restarted elsewhere): the next renewal is refused.
        assert store.acquire(conns(), "node-a", "https://a/", 60) == 2
        wait_until(lambda: told.lost, "on_lost")
        assert told.lost == ["the lease of epoch 1 was not renewed: node-a holds epoch 2"]
        assert not keeper.valid() and not keeper.may_acquire, "it must reload before it may lead again"
        store.release(conns(), "node-a", 2)
        keeper.may_acquire = True
        wait_until(lambda: len(told.acquired) == 2, "the keeper to lead again")
        assert told.acquired[1][0] == 3
        # The database stops answering: leader until the local deadline, not a moment after.
        pg.stop("immediate")
        stopped = time.monotonic()
        wait_until(lambda: len(told.lost) == 2, "on_lost without a database", timeout=3 * TTL)
        assert time.monotonic() - stopped <= TTL + 0.3
        assert told.lost[1] == "the lease of epoch 3 could not be renewed within lease_ttl = 1s (the HA database " \
                               "did not answer)"
        assert not keeper.valid()
    finally:
        if not pg.running():
            pg.start()
        keeper.stop()


_PAUSED_LEADER = textwrap.dedent("""
    import asyncio, json, sys, threading, time
    from luigi_appliance.ha.db import connect
    from luigi_appliance.ha.lease import LeaseKeeper
    from luigi_appliance.ha.settings import HaSettings
    from luigi_appliance.ha.store import HaStore
    from luigi_appliance.ha.writer import JournalWriter, NotLeader
    from pathlib import Path

    args = json.loads(sys.argv[1])
    args["sslrootcert"], args["password_file"] = Path(args["sslrootcert"]), Path(args["password_file"])
    settings = HaSettings(**args)
    store = HaStore(settings.schema)

    said = threading.Lock()

    def say(*words):  # from the loop, the keeper's thread: one whole line each
        with said:
            sys.stdout.write(" ".join(map(str, words)) + "\\n")
            sys.stdout.flush()

    async def main():
        loop = asyncio.get_running_loop()
        won = asyncio.Event()
        keeper = LeaseKeeper(settings, store, lambda: connect(settings, "paused leader lease"),
                             on_acquired=lambda epoch, previous: loop.call_soon_threadsafe(won.set),
                             on_lost=lambda reason: say("lost", reason))
        keeper.start()
        await won.wait()
        writer = JournalWriter(lambda: connect(settings, "paused leader journal"), store, 10, loop,
                               on_fenced=lambda reason: say("fenced", reason))
        writer.start(keeper.epoch)
        say("leading", keeper.epoch)
        n = 0
        while True:  # no local lease check: only the database's fence can stop these writes
            n += 1
            try:
                await writer.committed(writer.append(time.time(), {"n": n}))
            except NotLeader:
                say("stopped writing")
                await asyncio.sleep(3)  # the keeper's thread says what it finds meanwhile
                return
            await asyncio.sleep(0.02)

    asyncio.run(main())
""")


def test_a_sigstopped_leader_is_fenced_when_it_wakes_up(ha: HaSettings, store: HaStore, db: Database,
                                                        tmp_path: Path) -> None:
    script = tmp_path / "paused_leader.py"
    script.write_text(_PAUSED_LEADER)
    args = {"backend": "postgresql", "host": ha.host, "port": ha.port, "dbname": ha.dbname, "user": ha.user,
            "password_file": str(ha.password_file), "sslmode": ha.sslmode, "sslrootcert": str(ha.sslrootcert),
            "node_name": "node-a", "advertise_url": ha.advertise_url, "lease_ttl": TTL}
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen([sys.executable, str(script), json.dumps(args)], stdout=subprocess.PIPE,
                                 stderr=log, text=True, cwd=REPO)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(child.stdout.readline, "")), daemon=True)
    reader.start()
    b_told = Told()
    b = keeper_for(replace(ha, node_name="node-b", advertise_url="https://b.example.com:8082/"), store, b_told)
    try:
        wait_until(lambda: "leading 1\n" in lines, "the child to lead", timeout=20)
        wait_until(lambda: len(rows_of(db)) >= 5, "the child to write")
        b.start()
        os.kill(child.pid, signal.SIGSTOP)
        wait_until(lambda: b_told.acquired, "node-b to take the paused leader's lease", timeout=5 * TTL)
        assert b_told.acquired[0][0] == 2
        conn = connect(ha, "test")
        taken_at = store.append(conn, 2, [row(1, by="node-b")])
        assert taken_at
        os.kill(child.pid, signal.SIGCONT)
        wait_until(lambda: any(line.startswith("stopped writing") for line in lines), "the child to stop")
        time.sleep(2 * TTL)  # its keeper's next renewals
        assert any(line.startswith("lost ") for line in lines), lines
        assert any(line.startswith("fenced a newer epoch than 1") for line in lines), lines
        late = db.query("SELECT count(*) FROM luigi_ha.journal WHERE epoch = 1 AND pos > %s", taken_at[0])
        assert late == [(0,)], "the paused leader wrote after the takeover"
        assert store.lease(conn).node == "node-b" and b_told.lost == []
        conn.close()
    finally:
        b.stop()
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait(10)
