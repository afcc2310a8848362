"""Task history in a real PostgreSQL 15 (TLS, verify-full, scram) under real schedulers and workers.

Each test gets its own database in the session's ephemeral cluster (tests/pg_cluster.py), made
ready with ``luigi-appliance db upgrade`` as its owner; the scheduler writes as a DML-only role.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import requests
from pg_cluster import Database

from conftest import BIN, PIPELINES, Server, cli, client_conf

DIAMOND_EVENTS = 36  # 12 tasks: PENDING, RUNNING, DONE each


def upgrade(conf: Path) -> str:
    result = cli("--config", str(conf), "db", "upgrade")
    assert result.returncode == 0, result.stderr
    return result.stdout


def history_server(configured_server: Callable[..., Server], db: Database, *, start: bool = True,
                   extra: str = "") -> Server:
    server = configured_server(db.history_section(extra=extra), start=False)
    upgrade(server_conf(server))
    if start:
        server.start()
    return server


def server_conf(server: Server) -> Path:
    return Path(server.args[server.args.index("--config") + 1])


def status(server: Server) -> dict:
    response = server.session().get(f"{server.url}/history/api/status", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def run_pipeline(tmp_path: Path, server: Server, module: str, *task: str) -> None:
    result = cli("run", "--client-config", str(client_conf(tmp_path, server)),
                 "--credentials-file", str(worker_credentials(tmp_path, server)),
                 "--module", module, *task, env={"PYTHONPATH": str(PIPELINES)}, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def worker_credentials(tmp_path: Path, server: Server) -> Path:
    path = tmp_path / "admin-credentials"
    path.write_text(f"admin:{server.admin_password}\n")
    path.chmod(0o600)
    return path


def events_by_task(db: Database) -> dict[str, list[tuple[str, str | None, str | None]]]:
    rows = db.query("SELECT t.task_id, e.event_name, e.principal, e.worker_host FROM task_events e "
                    "JOIN tasks t ON t.id = e.task_id ORDER BY e.ts, e.id")
    out: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for task_id, event, principal, host in rows:
        out.setdefault(task_id, []).append((event, principal, host))
    return out


def event_count(db: Database) -> int:
    return db.query("SELECT count(*) FROM task_events")[0][0]


def settled_event_count(db: Database, expected: int, timeout: float = 30) -> int:
    """The rows in task_events once there are ``expected`` of them, or after ``timeout``.

    The status cannot say "all committed": the writer takes a batch off the queue (``queued``
    is then 0) and waits BATCH_LINGER for more before its transaction commits (``written``
    moves then), so for a moment an event is in neither count, the state being "ok". Only the
    database says when every emitted event is in; a lost one shows as the count it stopped at.
    """
    deadline = time.monotonic() + timeout
    while (count := event_count(db)) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def test_worker_run_lands_in_postgres_with_events_principal_and_host(configured_server, db, tmp_path) -> None:
    server = history_server(configured_server, db)
    run_pipeline(tmp_path, server, "diamond_pipeline", "Report", "--out-dir", str(tmp_path / "out"), "--workers", "2")
    wait_for(lambda: status(server)["written"] == DIAMOND_EVENTS, "36 events written")
    by_task = events_by_task(db)
    assert len(by_task) == 12
    for task_id, events in by_task.items():
        assert [e[0] for e in events] == ["PENDING", "RUNNING", "DONE"], task_id
        assert {e[1] for e in events} == {"admin"}  # the authenticated principal, from the guard
        assert events[1][2] and events[1][2] == events[1][2].strip()  # RUNNING carries the worker host
    # Parameters as luigi serialises them, once per task; timestamps are timestamptz.
    params = db.query("SELECT p.name, p.value FROM task_parameters p JOIN tasks t ON t.id = p.task_id "
                      "WHERE t.name = 'Report'")
    assert sorted(params) == [("fail", "False"), ("out_dir", str(tmp_path / "out"))]
    assert db.query("SELECT data_type FROM information_schema.columns WHERE table_name = 'task_events' "
                    "AND column_name = 'ts'") == [("timestamp with time zone",)]
    # The connection really is TLS (verify-full against the test CA): the server says so.
    assert db.query("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid "
                    "WHERE a.usename = %s", db.user) == [(True,)]
    assert server.rpc("has_task_history").json()["response"] is True
    assert status(server)["state"] == "ok"


def test_database_stopped_mid_run_loses_nothing(configured_server, db, pg, tmp_path) -> None:
    server = history_server(configured_server, db)
    steps = 15
    worker = subprocess.Popen(
        [str(BIN), "run", "--client-config", str(client_conf(tmp_path, server)),
         "--credentials-file", str(worker_credentials(tmp_path, server)), "--module", "history_chain", "Step",
         "--out-dir", str(tmp_path / "out"), "--index", str(steps - 1), "--delay", "0.3"],
        env={**os.environ, "PYTHONPATH": str(PIPELINES)}, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: status(server)["written"] >= 3 + 2 * 3, "the first steps written")
        pg.stop("immediate")  # a crash of the database, mid-run
        wait_for(lambda: status(server)["state"] == "degraded", "degraded")
        health = requests.get(f"{server.url}/healthz", verify=str(server.ca_file), timeout=5)
        assert health.text == "degraded\n"
        wait_for(lambda: status(server)["spool_events"] >= 3, "events spooled while the database is down")
        pg.start()
        out, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0, out[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
        if not pg.running():
            pg.start()
    wait_for(lambda: status(server)["state"] == "ok", "history healthy again")
    st = status(server)
    assert st["spool_events"] == 0 and st["dropped"] == 0 and st["dead_lettered"] == 0 and st["spooled"] > 0
    assert st["emitted"] == 3 * steps
    # The worker's last DONE may still be in the writer's batch: wait for the database, then
    # exactly: nothing lost, nothing stored twice.
    assert settled_event_count(db, st["emitted"]) == st["emitted"]
    by_task = events_by_task(db)
    assert len(by_task) == steps
    assert all([e[0] for e in events] == ["PENDING", "RUNNING", "DONE"] for events in by_task.values())
    assert "TASK HISTORY DEGRADED" in server.log() and "replaying" in server.log()
    assert requests.get(f"{server.url}/healthz", verify=str(server.ca_file), timeout=5).text == "ok\n"


def add_load_task(server, task_id: str, task_status: str) -> None:
    resp = server.rpc("add_task", worker="w1", task_id=task_id, family="Load", status=task_status, params={})
    assert resp.status_code == 200, resp.text


def test_a_write_held_past_statement_timeout_is_spooled_and_lands_once(configured_server, db) -> None:
    server = history_server(configured_server, db, extra="statement_timeout = 1s")

    add_load_task(server, "Load_a", "PENDING")
    wait_for(lambda: status(server)["written"] == 1, "the first event written")
    with db.cluster.connect(db.name) as conn, conn.cursor() as cur:
        # Another session holds the task's row: the writer's next insert (its foreign key check)
        # waits for it until statement_timeout cancels the statement: a real slow commit. The
        # events wait in the spool and reach the database only once the lock goes.
        cur.execute("BEGIN")
        cur.execute("SELECT id FROM tasks WHERE task_id = 'Load_a' FOR UPDATE")
        add_load_task(server, "Load_a", "DONE")
        add_load_task(server, "Load_b", "PENDING")
        wait_for(lambda: status(server)["spool_events"] == 2, "the held events spooled")
        wait_for(lambda: "canceling statement due to statement timeout" in server.log(), "the statement cancelled")
        assert event_count(db) == 1
        assert requests.get(f"{server.url}/healthz", verify=str(server.ca_file), timeout=5).text == "degraded\n"
        cur.execute("ROLLBACK")
    wait_for(lambda: status(server)["state"] == "ok", "history healthy again")
    st = status(server)
    assert st["emitted"] == 3 and st["dropped"] == 0 and st["dead_lettered"] == 0
    assert settled_event_count(db, 3) == 3
    assert events_by_task(db) == {"Load_a": [("PENDING", "admin", None), ("DONE", "admin", None)],
                                  "Load_b": [("PENDING", "admin", None)]}


def unaccounted(st: dict) -> int:
    """Emitted events in none of the status's places (0 when the figures are honest)."""
    return st["emitted"] - (st["written"] + st["spool_events"] + st["queued"] + st["dropped"] + st["dead_lettered"])


def test_a_batch_waiting_on_a_row_lock_is_counted_as_queued_until_committed(configured_server, db) -> None:
    # statement_timeout well past the lock: the batch stays in the writer, not in the spool.
    server = history_server(configured_server, db, extra="statement_timeout = 60s")

    add_load_task(server, "Load_a", "PENDING")
    wait_for(lambda: status(server)["written"] == 1, "the first event written")
    with db.cluster.connect(db.name) as conn, conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT id FROM tasks WHERE task_id = 'Load_a' FOR UPDATE")
        add_load_task(server, "Load_a", "DONE")
        add_load_task(server, "Load_b", "PENDING")
        # The writer's statement really waits on the lock (seen by the database), so the two
        # events are off the queue and in no counter: the status must still show them.
        wait_for(lambda: db.query("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND "
                                  "wait_event_type = 'Lock'", db.user)[0][0] == 1, "the writer waiting on the lock")
        for _ in range(3):
            st = status(server)
            assert (st["emitted"], st["written"], st["spool_events"], st["queued"]) == (3, 1, 0, 2), st
            assert unaccounted(st) == 0 and st["state"] == "ok"
            time.sleep(0.3)
        metrics = server.session().get(f"{server.url}/history/metrics", timeout=5).text
        assert "luigi_appliance_history_queued_events 2.0" in metrics
        assert event_count(db) == 1
        cur.execute("ROLLBACK")
    wait_for(lambda: status(server)["queued"] == 0, "the held batch committed")
    st = status(server)
    assert (st["emitted"], st["written"], st["spool_events"], st["spooled"]) == (3, 3, 0, 0), st
    assert unaccounted(st) == 0
    # queued 0 and spool 0 now mean every event is stored: no waiting on the database.
    assert event_count(db) == st["written"] == 3


def test_starts_with_database_down_and_replays_spool_after_sigkill(configured_server, db, pg, tmp_path) -> None:
    server = history_server(configured_server, db, start=False)
    pg.stop("fast")
    try:
        server.start()  # serves although the database is down
        wait_for(lambda: status(server)["database_state"] == "down", "database seen down")
        assert requests.get(f"{server.url}/healthz", verify=str(server.ca_file), timeout=5).text == "degraded\n"
        assert "TASK HISTORY DEGRADED" in server.log()
        metrics = server.session().get(f"{server.url}/history/metrics", timeout=5).text
        assert "luigi_appliance_history_up 0" in metrics
        run_pipeline(tmp_path, server, "diamond_pipeline", "Report", "--out-dir", str(tmp_path / "out"))
        wait_for(lambda: status(server)["spool_events"] == DIAMOND_EVENTS, "all events in the spool")
        assert (server.state_dir / "history-spool").stat().st_size > 0
        server.stop(signal.SIGKILL)
    finally:
        pg.start()
    server.start()  # the same Server object, so the fixture stops this process too
    wait_for(lambda: status(server)["spool_events"] == 0, "spool replayed at startup")
    assert status(server)["replayed"] == DIAMOND_EVENTS
    assert event_count(db) == DIAMOND_EVENTS
    assert not (server.state_dir / "history-spool").exists()
    assert all(len(events) == 3 for events in events_by_task(db).values())


def test_without_history_configured_pages_say_so(configured_server) -> None:
    server = configured_server()
    session = server.session()
    for path in ("/history", "/history/by_name/X", "/history/by_id/1", "/tasklist", "/tasklist/X"):
        response = session.get(f"{server.url}{path}", timeout=10)
        assert response.status_code == 404, path
        assert "Task history is not enabled" in response.text and "[history] backend" in response.text
    assert session.get(f"{server.url}/history/api/events", timeout=10).json()["error"] == 404
    assert session.get(f"{server.url}/history/api/status", timeout=10).json() == {"backend": "none",
                                                                                  "state": "disabled"}
    assert server.rpc("has_task_history").json()["response"] is False
    # Still behind the guard: no credentials, no page.
    assert requests.get(f"{server.url}/history", verify=str(server.ca_file), timeout=10).status_code == 401


def test_pages_need_credentials_and_the_viewer_role(configured_server, db) -> None:
    server = history_server(configured_server, db)
    for path in ("/history", "/history/api/events", "/history/api/status", "/history/metrics", "/tasklist"):
        assert requests.get(f"{server.url}{path}", verify=str(server.ca_file), timeout=10).status_code == 401
        assert server.session().post(f"{server.url}{path}", timeout=10).status_code == 405


def json_events(server: Server, **params: str) -> dict:
    response = server.session().get(f"{server.url}/history/api/events", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def param_dump(value: object) -> str:
    return json.dumps(value)


def test_private_and_hidden_parameters_never_reach_the_database(configured_server, db) -> None:
    server = history_server(configured_server, db)
    params = {"day": "2026-12-01", "password": "hunter2-not-for-history", "token": "hidden-token-value"}
    # luigi's ParameterVisibility: 2 private (not even in the task id), 1 hidden (not shown).
    resp = server.rpc("add_task", worker="w1", task_id="Load_2026_12_01_abc", family="Load", status="PENDING",
                      params=params, param_visibilities={"password": 2, "token": 1})
    assert resp.status_code == 200, resp.text
    wait_for(lambda: status(server)["written"] >= 1, "the event written")
    stored = db.query("SELECT p.name, p.value FROM task_parameters p JOIN tasks t ON t.id = p.task_id "
                      "WHERE t.name = 'Load'")
    assert stored == [("day", "2026-12-01")]
    page = server.session().get(f"{server.url}/history/api/events", params={"name": "Load"}, timeout=30)
    assert page.status_code == 200
    assert "hunter2" not in page.text and "hidden-token-value" not in page.text
