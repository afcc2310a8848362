"""Task history under hostile input and a full disk, against a real scheduler and PostgreSQL.

Events are sent as any worker account can: ``add_task``/``get_work`` over HTTP, JSON bodies that
carry a NUL (``\\u0000``) or a lone surrogate (``\\ud800``). After each poison event, later
normal events must still be written, the counters on /history/api/status must be exact, nothing
may loop with tracebacks in the log, and a restart must not replay anything again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_cluster import Database
from test_history_pg import event_count, history_server, server_conf, status, upgrade, wait_for

from conftest import Server
from luigi_appliance.history.events import Event
from luigi_appliance.history.spool import Spool

WORKER = "poison-worker"
DEAD_LETTER = "history-dead-letter.jsonl"
COUNTERS = ("emitted", "written", "spooled", "replayed", "dropped", "dead_lettered", "spool_events")


def add(server: Server, task_id: str, family: str = "Normal", params: dict[str, str] | None = None) -> None:
    response = server.rpc("add_task", worker=WORKER, task_id=task_id, family=family, params=params or {},
                          status="PENDING")
    assert response.status_code == 200, response.text


def add_normal(server: Server, first: int, count: int) -> None:
    for i in range(first, first + count):
        add(server, f"Normal_{i}", params={"i": str(i)})


def counters(server: Server) -> dict[str, int]:
    st = status(server)
    # .get: on a version without some counter, a test fails on the behaviour, not on a KeyError.
    return {key: st.get(key, 0) for key in COUNTERS}


def expect(server: Server, **values: int) -> None:
    """Wait until the writer is idle with these counters (all others 0), then check them once more."""
    wanted = {key: values.get(key, 0) for key in COUNTERS}
    try:
        wait_for(lambda: status(server)["queued"] == 0 and counters(server) == wanted, f"counters {wanted}", 30)
    except AssertionError:
        raise AssertionError(f"counters {counters(server)} != {wanted}\n{server.log()[-3000:]}") from None


def dead_letters(server: Server) -> list[dict]:
    path = server.state_dir / DEAD_LETTER
    if not path.exists():
        return []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_no_traceback(server: Server) -> None:
    log = server.log()
    assert "Traceback" not in log, log[-3000:]


def restart_replays_nothing(server: Server, db: Database, events: int) -> None:
    server.stop()
    server.start()
    expect(server)
    assert event_count(db) == events
    assert not (server.state_dir / "history-spool").exists()


@pytest.mark.parametrize(("bad", "escaped"), [("\x00", "\\x00"), ("\ud800", "\\ud800")], ids=["nul", "surrogate"])
def test_unstorable_characters_are_escaped_and_history_goes_on(configured_server, db, bad, escaped) -> None:
    server = history_server(configured_server, db)
    add(server, f"Bad{bad}1", family=f"Fam{bad}ily", params={"p": f"a{bad}b", f"k{bad}": "v"})
    response = server.rpc("get_work", worker=WORKER, host=f"host{bad}1")  # RUNNING, with the worker's host
    assert response.json()["response"]["task_id"] == f"Bad{bad}1"
    expect(server, emitted=2, written=2)  # the old writer stopped here for good
    add_normal(server, 0, 3)
    expect(server, emitted=5, written=5)
    assert event_count(db) == 5
    (record,) = db.query("SELECT id, task_id, name, host FROM tasks WHERE task_id LIKE 'Bad%'")
    assert record[1:] == (f"Bad{escaped}1", f"Fam{escaped}ily", f"host{escaped}1")
    assert sorted(db.query("SELECT name, value FROM task_parameters WHERE task_id = %s", record[0])) == [
        (f"k{escaped}", "v"), ("p", f"a{escaped}b")]
    assert db.query("SELECT worker_host FROM task_events WHERE event_name = 'RUNNING'") == [(f"host{escaped}1",)]
    if bad == "\x00":  # the pages look up what was stored (a lone surrogate cannot be put in a URL)
        page = server.session().get(f"{server.url}/history/by_task_id/Bad%001", timeout=10)
        assert page.status_code == 200 and f"Bad{escaped}1" in page.text
    assert dead_letters(server) == []
    assert_no_traceback(server)
    restart_replays_nothing(server, db, 5)


def test_ids_and_names_that_collide_once_cut_stay_apart(configured_server, db) -> None:
    server = history_server(configured_server, db)
    long_id = "Collide_" + "x" * 250  # tasks.task_id is VARCHAR(200)
    huge_family = "F" * 20_000  # tasks.name is VARCHAR(128)
    long_param = "p" * 200  # task_parameters.name is VARCHAR(128), part of its primary key
    for end in "AB":
        add(server, long_id + end, family=huge_family + end, params={long_param + "1": "one", long_param + "2": "two"})
    expect(server, emitted=2, written=2)
    add_normal(server, 0, 2)
    expect(server, emitted=4, written=4)
    rows = db.query("SELECT id, task_id, name FROM tasks WHERE task_id LIKE 'Collide%' ORDER BY id")
    assert len(rows) == 2 and len({r[1] for r in rows}) == 2 and len({r[2] for r in rows}) == 2
    for (record, task_id, name), end in zip(rows, "AB", strict=True):
        assert len(task_id) == 200 and task_id.startswith(long_id[:150]) and "...#" in task_id
        assert len(name) == 128 and name.startswith("F" * 100) and "...#" in name
        params = dict(db.query("SELECT name, value FROM task_parameters WHERE task_id = %s", record))
        # The whole id and family are kept as parameters; the two long names stay two.
        assert params.pop("(task_id)") == long_id + end and params.pop("(family)") == huge_family + end
        assert sorted(params.values()) == ["one", "two"] and all(len(k) == 128 for k in params)
        # The page finds the task by its whole id.
        page = server.session().get(f"{server.url}/history/by_task_id/{long_id + end}", timeout=10)
        assert page.status_code == 200 and task_id in page.text
    assert dead_letters(server) == []
    assert_no_traceback(server)
    restart_replays_nothing(server, db, 4)


REFUSED = "refused-by-the-database"


def test_refused_event_is_set_aside_and_never_replayed(configured_server, db, pg) -> None:
    server = history_server(configured_server, db)
    # A constraint the cleaning knows nothing about stands in for any data PostgreSQL refuses.
    db.query(f"ALTER TABLE task_parameters ADD CONSTRAINT no_poison CHECK (value <> '{REFUSED}')")
    add_normal(server, 0, 1)
    add(server, "Poison_1", family="Poison", params={"p": REFUSED})
    add_normal(server, 1, 2)
    expect(server, emitted=4, written=3, dead_lettered=1)
    (letter,) = dead_letters(server)
    assert letter["event"]["task_id"] == "Poison_1" and letter["event"]["params"] == {"p": REFUSED}
    assert letter["reason"].startswith("IntegrityError") and "no_poison" in letter["reason"]
    assert server.log().count("TASK HISTORY EVENTS REFUSED") == 1
    assert status(server)["state"] == "degraded"  # for a minute after an event was set aside
    metrics = server.session().get(f"{server.url}/history/metrics", timeout=10).text
    assert "luigi_appliance_history_events_dead_lettered_total 1.0\n" in metrics
    assert "luigi_appliance_history_events_written_total 3.0\n" in metrics

    # A poison event in the spool: replayed after a restart, set aside, the rest written.
    pg.stop("fast")
    try:
        add_normal(server, 3, 1)
        add(server, "Poison_2", family="Poison", params={"p": REFUSED})
        add_normal(server, 4, 2)
        expect(server, emitted=8, written=3, dead_lettered=1, spooled=4, spool_events=4)
        server.stop()
    finally:
        pg.start()
    server.start()
    expect(server, written=3, replayed=3, dead_lettered=1)
    assert [d["event"]["task_id"] for d in dead_letters(server)] == ["Poison_1", "Poison_2"]
    assert event_count(db) == 6
    assert_no_traceback(server)
    restart_replays_nothing(server, db, 6)
    assert len(dead_letters(server)) == 2


def test_spool_of_an_older_version_with_unstorable_values_is_replayed_once(configured_server, db) -> None:
    server = history_server(configured_server, db, start=False)
    # The older version spooled events as they came: a NUL and a lone surrogate, uncleaned.
    spool = Spool(server.state_dir / "history-spool", limit=1 << 20)
    spool.open()
    now = time.time()
    assert spool.append([Event("0" * 31 + "1", "Old\x00", "Old", {"p": "\ud800"}, "PENDING", now, None, "admin"),
                         Event("0" * 31 + "2", "Old_2", "Old", {"p": "fine"}, "PENDING", now, None, "admin")])
    server.start()
    expect(server, written=2, replayed=2)
    assert sorted(db.query("SELECT t.task_id, p.value FROM tasks t JOIN task_parameters p ON p.task_id = t.id")) == [
        ("Old\\x00", "\\ud800"), ("Old_2", "fine")]
    assert_no_traceback(server)
    restart_replays_nothing(server, db, 2)


@contextlib.contextmanager
def small_tmpfs(directory: Path) -> Iterator[None]:
    """A real file system that fills up: tmpfs (the tests run as root, like CI)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0750", "tmpfs", str(directory)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


def test_counters_stay_exact_through_a_disk_full_episode(configured_server, db, pg) -> None:
    # One event per batch and spool frame; a parameter larger than a page, so that no frame fits
    # in what is left of the spool's last page once the disk is full.
    # No periodic snapshot either: one replacing the last would free space in the middle of this.
    server = configured_server(db.history_section(extra="batch_size = 1"), start=False, snapshot_interval="3600")
    upgrade(server_conf(server))
    big = {"blob": "x" * 6000}
    password = (server.state_dir / "admin-password").read_bytes()
    with small_tmpfs(server.state_dir):
        (server.state_dir / "admin-password").write_bytes(password)
        try:
            pg.stop("fast")
            try:
                server.start()
                wait_for(lambda: status(server)["database_state"] == "down", "database seen down")
                for i in range(3):
                    add(server, f"Spooled_{i}", params=big)
                expect(server, emitted=3, spooled=3, spool_events=3)
                filler = fill(server.state_dir)
                for i in range(2):  # the spool cannot take them: lost, and counted once each
                    add(server, f"Lost_{i}", params=big)
                expect(server, emitted=5, spooled=3, spool_events=3, dropped=2)
            finally:
                pg.start()
            # Replayed while the replay offset cannot be saved (the disk is still full).
            expect(server, emitted=5, spooled=3, written=3, replayed=3, dropped=2)
            add_normal(server, 0, 1)
            expect(server, emitted=6, spooled=3, written=4, replayed=3, dropped=2)
            filler.unlink()
            add_normal(server, 1, 2)
            expect(server, emitted=8, spooled=3, written=6, replayed=3, dropped=2)
            assert event_count(db) == 6
            assert sorted(r[0] for r in db.query("SELECT task_id FROM tasks")) == [
                "Normal_0", "Normal_1", "Normal_2", "Spooled_0", "Spooled_1", "Spooled_2"]
            log = server.log()
            assert log.count("TASK HISTORY EVENTS DROPPED") == 1 and "replay offset" in log
            assert_no_traceback(server)
            assert not list(server.state_dir.glob("history-spool*"))
            restart_replays_nothing(server, db, 6)
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.stop()
