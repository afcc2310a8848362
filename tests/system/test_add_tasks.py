"""add_tasks, the batched add_task: real schedulers (``luigi-appliance serve``, luigi's own
``luigid``), real workers (``luigi-appliance run`` on tests/pipelines/wide_pipeline.py), the real
slapd of tests/ldap_server.py for an allowlist that allows some families."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from ldap_server import PEOPLE
from test_ldap import audit_lines, directory, directory_up, ldap_scheduler, session, wait_for  # noqa: F401 (fixtures)

from conftest import PIPELINES, Server, cli, client_conf, free_port
from luigi_appliance.audit import FLUSH_INTERVAL

MAX_BATCH_TASKS = 1000  # as docs/access-control.md states it
CLIENT_BATCH = 500  # what `luigi-appliance run` sends per add_tasks call


def run_wide(tmp_path: Path, conf: Path, credentials: Path, *args: str) -> subprocess.CompletedProcess:
    return cli("run", "--client-config", str(conf), "--credentials-file", str(credentials),
               "--module", "wide_pipeline", "ReportWide", "--out-dir", str(tmp_path / "out"), *args,
               env={"PYTHONPATH": os.pathsep.join(filter(None, [str(PIPELINES), os.environ.get("PYTHONPATH")]))},
               cwd=tmp_path)


def rpc_lines(path: Path) -> list[dict]:
    time.sleep(3 * FLUSH_INTERVAL)  # the scheduler writes the trail in batches
    return [x for x in map(json.loads, path.read_text().splitlines()) if x["event"] == "rpc"]


def add_tasks(server: Server, worker: str, tasks: list[dict], session: requests.Session | None = None,
              ) -> requests.Response:
    return server.rpc("add_tasks", session=session, worker=worker, tasks=tasks)


def task_ids(server: Server, session: requests.Session | None = None) -> set[str]:
    resp = server.rpc("task_list", session=session, status="", upstream_status="")
    assert resp.status_code == 200, resp.text
    return set(resp.json()["response"])


@pytest.mark.doc_rule("add-tasks-audit")
def test_run_schedules_a_wide_graph_in_batches_and_runs_every_task(dev_server: Server, tmp_path: Path) -> None:
    # 1100 leaves (1080 complete already, reported DONE while scheduling) and the root: three
    # batches (full, full, and the rest before add_worker), then the 21 others run.
    result = run_wide(tmp_path, client_conf(tmp_path, dev_server), dev_server.state_dir / "admin-credentials",
                      "--size", "1100", "--done-below", "1080")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "out").glob("leaf-*"))) == 20 and (tmp_path / "out" / "wide.txt").exists()
    done = dev_server.rpc("task_list", status="DONE", upstream_status="").json()["response"]
    assert len(done) == 1101
    lines = rpc_lines(dev_server.state_dir / "audit.log")
    batches = [x for x in lines if x["method"] == "add_tasks"]
    assert [(x["tasks"], x["outcome"]) for x in batches] == [(CLIENT_BATCH, "ok"), (CLIENT_BATCH, "ok"), (101, "ok")]
    assert all(x["principal"] == "admin" and x["worker"] == batches[0]["worker"] for x in batches)
    # Each task still has its add_task line, as luigi's add_task would give it.
    batched = [x for x in lines if x["method"] == "add_task" and x.get("via") == "add_tasks"]
    assert len(batched) == 1101 and {x["task_id"] for x in batched} == set(done)
    assert {x["status"] for x in batched} == {"DONE", "PENDING"} and {x["family"] for x in batched} == {
        "ReportLeaf", "ReportWide"}
    # The batches came before the worker's first other call: the order luigi made them in (the
    # keep-alive thread's pings have no order with the worker's calls).
    first_other = next(i for i, x in enumerate(lines) if x["method"] not in ("add_task", "add_tasks", "ping"))
    assert lines[first_other]["method"] == "add_worker" and lines.index(batches[-1]) < first_other
    # While running, each outcome is the add_task it always was (get_work follows it at once).
    alone = [x for x in lines if x["method"] == "add_task" and "via" not in x]
    assert len(alone) == 21 and {x["status"] for x in alone} == {"DONE"}
    # The history has the batched tasks' events, with the principal, as for add_task.

    def root_events() -> list[dict]:
        resp = dev_server.session().get(f"{dev_server.url}/history/api/events", params={"name": "ReportWide"},
                                        timeout=10)
        return resp.json()["events"] if resp.status_code == 200 else []

    events = wait_for(lambda: [e for e in root_events() if e["event"] == "DONE"] and root_events())
    assert {e["event"] for e in events} >= {"PENDING", "DONE"} and {e["principal"] for e in events} == {"admin"}


@pytest.mark.parametrize(("setting", "expected"), [(300, [300, 300, 101]), (1, [])])
def test_client_conf_sets_the_batch_size_and_1_turns_batching_off(dev_server: Server, tmp_path: Path,
                                                                   setting: int, expected: list[int]) -> None:
    conf = client_conf(tmp_path, dev_server)
    conf.write_text(conf.read_text() + f"add_task_batch = {setting}\n")
    result = run_wide(tmp_path, conf, dev_server.state_dir / "admin-credentials",
                      "--size", "700", "--done-below", "695")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = rpc_lines(dev_server.state_dir / "audit.log")
    assert [x["tasks"] for x in lines if x["method"] == "add_tasks"] == expected
    alone = [x for x in lines if x["method"] == "add_task" and "via" not in x]
    assert len(alone) == (6 if expected else 701 + 6)


@pytest.mark.doc_rule("add-tasks-all-or-nothing")
def test_a_batch_with_a_family_the_caller_may_not_add_is_refused_whole(request: pytest.FixtureRequest,
                                                                       tmp_path: Path) -> None:
    server = request.getfixturevalue("ldap_scheduler")()  # test_ldap's slapd and its [families]
    bot = session(server, "etl-bot")  # etl-services: Extract, Transform, Rep*
    batch = [{"task_id": "Report_1", "family": "Report", "status": "PENDING"},
             {"task_id": "Other_1", "family": "Other", "status": "PENDING", "deps": ["Report_1"]},
             {"task_id": "Report_2", "family": "Report", "status": "PENDING"}]
    refused = add_tasks(server, "bot-w", batch, session=bot)
    assert refused.status_code == 403
    assert refused.json()["reason"] == ("add_tasks: task 2 of 3 (Other_1): task family 'Other' is not in the "
                                        "allowlist of etl-bot; nothing in the batch was applied")
    assert task_ids(server) == set()
    # Nothing applied includes the worker id: it was not bound to etl-bot.
    assert server.rpc("ping", session=session(server, "alice"), worker="bot-w").status_code == 200
    # The same tasks without the foreign one: applied, each as its own add_task.
    applied = add_tasks(server, "bot-w2", [batch[0], batch[2]], session=bot)
    assert applied.json() == {"response": {"tasks": 2, "held": []}}
    assert task_ids(server) == {"Report_1", "Report_2"}
    lines = [x for x in audit_lines(tmp_path) if x["event"] == "rpc" and x["principal"] == "etl-bot"]
    assert [(x["method"], x["outcome"], x.get("task_id"), x.get("family"), x.get("tasks")) for x in lines] == [
        ("add_tasks", "refused:403", "Other_1", "Other", 3),
        ("add_task", "ok", "Report_1", "Report", None), ("add_task", "ok", "Report_2", "Report", None),
        ("add_tasks", "ok", None, None, 2)]

    # A real worker whose graph holds one task of another family: the run ends with the refusal,
    # naming the task, and none of the graph reached the scheduler.
    creds = tmp_path / "etl-bot.credentials"
    creds.write_text(f"etl-bot:{PEOPLE['etl-bot'][0]}\n")
    creds.chmod(0o600)
    result = run_wide(tmp_path, client_conf(tmp_path, server), creds, "--size", "30", "--foreign")
    assert result.returncode != 0
    assert "scheduler refused add_tasks for user 'etl-bot': 403 permission denied: add_tasks: task " in result.stderr
    assert "(OtherLeaf_" in result.stderr and "is not in the allowlist of etl-bot" in result.stderr
    assert not any(task_id.startswith(("ReportLeaf", "ReportWide", "OtherLeaf")) for task_id in task_ids(server))
    assert not (tmp_path / "out").exists()


@pytest.mark.doc_rule("add-tasks-binding", "add-tasks-role")
def test_a_worker_id_of_another_principal_and_a_viewer_are_refused(configured_server, tmp_path: Path) -> None:
    server = configured_server(start=False)
    for name, role in (("bob", "worker"), ("carol", "worker"), ("vera", "viewer")):
        result = cli("user", "--users-file", str(tmp_path / "users"), "add", name, "--role", role,
                     input=f"{name}-long-password\n")
        assert result.returncode == 0, result.stderr
    server.start()
    bob, carol, vera = (server.session(n, f"{n}-long-password") for n in ("bob", "carol", "vera"))
    assert server.rpc("ping", session=bob, worker="bob-w").status_code == 200
    tasks = [{"task_id": "Job_1", "family": "Job"}, {"task_id": "Job_2", "family": "Job"}]
    taken = add_tasks(server, "bob-w", tasks, session=carol)
    assert taken.status_code == 403
    assert taken.json()["reason"] == ("add_tasks: worker id belongs to another principal; "
                                      "nothing in the batch was applied")
    viewer = add_tasks(server, "vera-w", tasks, session=vera)
    assert viewer.status_code == 403 and viewer.json()["reason"] == "method add_tasks needs role worker"
    assert task_ids(server) == set()
    assert add_tasks(server, "bob-w", tasks, session=bob).status_code == 200
    assert task_ids(server) == {"Job_1", "Job_2"}
    refused = [(x["principal"], x["outcome"]) for x in rpc_lines(tmp_path / "audit.log") if x["method"] == "add_tasks"]
    assert refused == [("carol", "refused:403"), ("vera", "refused:403"), ("bob", "ok")]


@pytest.mark.doc_rule("add-tasks-limit")
def test_get_an_over_limit_batch_and_an_oversized_body_are_refused(dev_server: Server) -> None:
    tasks = [{"task_id": f"Job_{i}", "family": "Job"} for i in range(MAX_BATCH_TASKS + 1)]
    get = dev_server.session().get(f"{dev_server.url}/api/add_tasks",
                                   params={"data": json.dumps({"worker": "w", "tasks": tasks[:2]})}, timeout=10)
    assert get.status_code == 405 and get.headers["Allow"] == "POST"
    over = add_tasks(dev_server, "w", tasks)
    assert over.status_code == 413
    assert over.json()["reason"] == f"add_tasks: {MAX_BATCH_TASKS + 1} tasks are more than the limit of " \
                                    f"{MAX_BATCH_TASKS} per call"
    big = [{"task_id": f"Job_{i}", "family": "Job", "params": {"p": "x" * 30_000}} for i in range(80)]
    assert add_tasks(dev_server, "w", big).status_code == 413  # [server] max_body_bytes, 2 MiB
    assert task_ids(dev_server) == set()
    assert add_tasks(dev_server, "w", tasks[:MAX_BATCH_TASKS]).json() == {"response": {"tasks": MAX_BATCH_TASKS,
                                                                                        "held": []}}
    assert len(task_ids(dev_server)) == MAX_BATCH_TASKS


@pytest.mark.doc_rule("add-tasks-split")
def test_batches_a_scheduler_finds_too_large_are_halved(configured_server, tmp_path: Path) -> None:
    # A scheduler whose body limit is below a full batch: the client halves each batch it
    # refuses (413) until they fit, in order, and the run completes.
    server = configured_server("[server]\nmax_body_bytes = 40000\n")
    creds = tmp_path / "admin.credentials"
    creds.write_text(f"admin:{server.admin_password}\n")
    creds.chmod(0o600)
    result = run_wide(tmp_path, client_conf(tmp_path, server), creds,
                      "--size", "600", "--done-below", "600")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(server.rpc("task_list", status="DONE", upstream_status="").json()["response"]) == 601
    batches = [x for x in rpc_lines(tmp_path / "audit.log") if x["method"] == "add_tasks"]
    assert batches and all(x["outcome"] == "ok" and x["tasks"] < CLIENT_BATCH for x in batches)
    assert sum(x["tasks"] for x in batches) == 601


@pytest.fixture
def luigid(tmp_path: Path) -> Iterator[str]:
    """luigi's own scheduler, as shipped with luigi: it knows nothing of add_tasks."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "luigid"), "--address", "127.0.0.1",
                             "--port", str(port), "--state-path", str(tmp_path / "luigid.pickle"),
                             "--logdir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"{url}/api/task_list", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.doc_rule("add-tasks-fallback")
def test_against_luigid_the_client_falls_back_to_add_task(luigid: str, tmp_path: Path) -> None:
    conf = tmp_path / "client.conf"
    conf.write_text(f"[client]\nscheduler_url = {luigid}/\nauth = basic\nretry_attempts = 1\nretry_wait = 0\n")
    creds = tmp_path / "creds"
    creds.write_text("anyone:luigid-checks-no-password\n")
    creds.chmod(0o600)
    result = run_wide(tmp_path, conf, creds, "--size", "40", "--done-below", "20", "--log-level", "INFO")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the scheduler does not offer add_tasks (luigid or an older appliance)" in result.stderr
    assert len(list((tmp_path / "out").glob("leaf-*"))) == 20
    # luigid's access log: add_tasks tried once, then one add_task per call (41 scheduled, 21 run).
    access = (tmp_path / "luigi-server.log").read_text()
    assert access.count("404 POST /api/add_tasks ") == 1 and access.count("200 POST /api/add_task ") == 41 + 21
    listed = {"data": json.dumps({"status": "DONE", "upstream_status": ""})}
    done = requests.post(f"{luigid}/api/task_list", data=listed, timeout=10).json()["response"]
    assert len(done) == 41
