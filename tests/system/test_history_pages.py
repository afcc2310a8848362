"""History pages and retention on a database holding 100,000+ events (bulk-loaded with COPY).

Content is checked against the database itself; nothing here measures time (bench/ does).
"""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
import requests
from pg_cluster import Database, cluster
from test_history_pg import history_server, server_conf

from conftest import Server, cli

TASKS = 25_000
EVENTS_PER_TASK = 4  # PENDING, RUNNING, DONE/FAILED, and one 200 days old
FAMILIES = 40
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def bulk_load(db: Database) -> None:
    """TASKS tasks of FAMILIES families; events in the last hours plus one old event each."""
    tasks, params, events = io.StringIO(), io.StringIO(), io.StringIO()
    eid = 0
    for i in range(1, TASKS + 1):
        family = f"Family{i % FAMILIES:02d}"
        tasks.write(f"{i}\t{family}_{i}\t{family}\thost{i % 7}\n")
        params.write(f"{i}\tday\t2026-01-{i % 28 + 1:02d}\n{i}\tpart\t{i}\n")
        base = NOW - dt.timedelta(seconds=i)  # task i ran i seconds ago (newest: task 1)
        old = NOW - dt.timedelta(days=200, seconds=i)
        result = "FAILED" if i % 10 == 0 else "DONE"
        for name, ts, principal, host in (("PENDING", old, "old", None), ("PENDING", base, "etl", None),
                                          ("RUNNING", base + dt.timedelta(milliseconds=100), "etl", f"w{i % 3}"),
                                          (result, base + dt.timedelta(milliseconds=100 + i % 1000), "etl", None)):
            eid += 1
            events.write(f"{eid}\t{i}\t{name}\t{ts.isoformat()}\t{eid:032x}\t{principal}\t{host or chr(92) + 'N'}\n")
    with db.cluster.connect(db.name) as conn, conn.cursor() as cur:
        for table, data, columns in (("tasks", tasks, "id, task_id, name, host"),
                                     ("task_parameters", params, "task_id, name, value"),
                                     ("task_events", events,
                                      "id, task_id, event_name, ts, uid, principal, worker_host")):
            data.seek(0)
            cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", data)
        cur.execute("SELECT setval('tasks_id_seq', %s), setval('task_events_id_seq', %s)", (TASKS, eid))
        cur.execute("ANALYZE")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Database:
    tmp = tmp_path_factory.mktemp("pages")
    return cluster().create_database(tmp)


@pytest.fixture
def server(configured_server, loaded: Database) -> Server:
    server = history_server(configured_server, loaded)
    if loaded.query("SELECT count(*) FROM tasks") == [(0,)]:
        bulk_load(loaded)
    assert loaded.query("SELECT count(*) FROM task_events")[0][0] >= 100_000
    return server


def get(server: Server, path: str, **params: str) -> requests.Response:
    response = server.session().get(f"{server.url}{path}", params=params, timeout=60)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    return response


def test_recent_history_is_newest_first_and_paginated(server: Server, loaded: Database) -> None:
    page = get(server, "/history").text
    assert "Luigi Task History" in page and page.count("/history/by_id/") == 100
    # Under the appliance's header (Basic: no session, so no logout), statuses in colour; the
    # scheduler holds none of these tasks, so no failure reason.
    assert '<span class="appliance-user" id="appliance-user">admin <span class="appliance-role">(admin)</span>' in page
    assert 'id="appliance-logout"' not in page and 'id="appliance-banner"' not in page
    assert '<span class="label label-success">DONE</span>' in page
    assert '<span class="label label-danger">FAILED</span>' in page
    assert 'class="failure-reason"' not in page
    # The newest event is task 1's DONE; links, host, status and parameters are rendered.
    assert page.index('href="/history/by_id/1"') < page.index('href="/history/by_id/2"')
    assert "<td>2026-01-02</td>" in page and "<td>etl</td>" in page
    # The JSON API walks the same order with cursors: no gaps, no repeats.
    first = get(server, "/history/api/events", limit="500").json()
    second = get(server, "/history/api/events", limit="500", cursor=first["next_cursor"]).json()
    ids = [e["event_id"] for e in first["events"] + second["events"]]
    expected = [row[0] for row in loaded.query(
        "SELECT id FROM task_events WHERE ts >= now() - interval '24 hours' ORDER BY ts DESC, id DESC LIMIT 1000")]
    assert ids == expected
    older = get(server, "/history", cursor=first["next_cursor"], limit="10").text
    assert older.count("/history/by_id/") == 10


def test_by_name_params_id_and_task_id(server: Server, loaded: Database) -> None:
    page = get(server, "/history/by_name/Family07").text
    expected = [row[0] for row in loaded.query(
        "SELECT id FROM tasks WHERE name = 'Family07' ORDER BY id DESC LIMIT 100")]
    assert [int(x.split('"')[0]) for x in page.split('href="/history/by_id/')[1:]] == expected
    assert "Older" in page
    found = get(server, "/history/by_params/Family07", data=json.dumps({"part": "47"})).text
    assert found.count("/history/by_id/") == 1 and 'href="/history/by_id/47"' in found
    assert get(server, "/history/by_params/Family07", data='{"part": "48"}').text.count("/history/by_id/") == 0
    show = get(server, "/history/by_id/47").text
    assert "Family07_47" in show and "<td>part</td>" in show
    assert show.count('<span class="label label-warning">PENDING</span>') == 2
    assert get(server, "/history/by_task_id/Family07_47").text == show
    missing = server.session().get(f"{server.url}/history/by_id/999999999", timeout=10)
    assert missing.status_code == 404
    bad = server.session().get(f"{server.url}/history/by_params/X", params={"data": "not json"}, timeout=10)
    assert bad.status_code == 400


def test_tasklist_and_runs(server: Server) -> None:
    names = get(server, "/tasklist").text
    assert [f"Family{i:02d}" for i in range(FAMILIES)] == [
        x.split('"')[0] for x in names.split('href="/tasklist/')[1:]]
    assert get(server, "/tasklist", limit="5", after="Family04").text.count('href="/tasklist/') == 5
    runs = get(server, "/tasklist/Family03", limit="20").text
    assert "Family03 History" in runs and runs.count("<rect ") == 20
    # Newest run first (task i ran i seconds ago), each i % 1000 ms long: 24923 took 923 ms, 24963 963 ms.
    assert runs.index("Family03_24923") < runs.index("Family03_24963")
    assert "<td>0.923s</td>" in runs and "<td>0.963s</td>" in runs
    failed_runs = get(server, "/tasklist/Family00", limit="20").text
    assert 'class="FAILED"' in failed_runs and '<span class="label label-danger">FAILED</span>' in failed_runs


def test_prune_keeps_newer_rows(server: Server, loaded: Database) -> None:
    conf = server_conf(server)
    # A task whose only event is old goes entirely; the others keep their recent events.
    loaded.query("INSERT INTO tasks (id, task_id, name) VALUES (%s, 'OnlyOld', 'Old')", TASKS + 1)
    loaded.query("INSERT INTO task_parameters VALUES (%s, 'p', 'v')", TASKS + 1)
    loaded.query("INSERT INTO task_events (task_id, event_name, ts) VALUES (%s, 'DONE', now() - interval '100 days')",
                 TASKS + 1)
    dry = cli("--config", str(conf), "history", "prune", "--older-than", "90d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {TASKS + 1} event(s)" in dry.stdout and "and 1 task(s)" in dry.stdout
    assert loaded.query("SELECT count(*) FROM task_events")[0][0] == TASKS * EVENTS_PER_TASK + 1
    recent = loaded.query("SELECT id FROM task_events WHERE ts >= now() - interval '90 days' ORDER BY id")
    result = cli("--config", str(conf), "history", "prune", "--older-than", "90d", "--batch-size", "7000")
    assert result.returncode == 0, result.stderr
    assert f"deleted {TASKS + 1} event(s)" in result.stdout and "and 1 task(s)" in result.stdout
    assert loaded.query("SELECT id FROM task_events ORDER BY id") == recent
    assert loaded.query("SELECT count(*) FROM tasks WHERE task_id = 'OnlyOld'") == [(0,)]
    assert loaded.query("SELECT count(*) FROM task_parameters WHERE task_id = %s", TASKS + 1) == [(0,)]
    assert loaded.query("SELECT count(*) FROM tasks") == [(TASKS,)]
    # Refuses an age that would wipe current history by mistake.
    assert cli("--config", str(conf), "history", "prune", "--older-than", "5m").returncode == 1
