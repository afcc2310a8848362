"""/metrics of the real scheduler over real HTTPS: behind the guard (401 anonymous, 200 for a scrape
account's bearer token, that account refused everything else), every metric of the catalog present
after a real luigi pipeline run with values that match what happened (RPC counts against the audit
trail, which writes one line per state-changing call with ``heartbeats`` on, and against the calls
made here; tasks by status against task_list; the wrong password counted), and labels bounded
after 1,000 distinct task ids."""

from __future__ import annotations

import collections
import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import PIPELINES, Server, cli, client_conf
from luigi_appliance import policy
from luigi_appliance.metrics.catalog import METRICS, PROCESS_METRICS, Kind

SCRAPER_PASSWORD = "scraper-password-123"
STATUSES = ("PENDING", "RUNNING", "BATCH_RUNNING", "DONE", "FAILED", "DISABLED", "UNKNOWN")

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_server(configured_server: Callable[..., Server], tmp_path: Path, extra: str = "") -> Server:
    """A scheduler whose audit trail has every RPC (heartbeats too) and a ``metrics`` account."""
    server = configured_server("heartbeats = true\n" + extra, start=False)
    result = cli("user", "--users-file", str(tmp_path / "users"), "add", "scraper", "--role", "metrics",
                 input=SCRAPER_PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    return server.start()


def bearer(server: Server, user: str, password: str) -> requests.Session:
    answer = server.session(user, password).post(f"{server.url}/auth/token", timeout=30)
    assert answer.status_code == 200, answer.text
    session = requests.Session()
    session.trust_env = False
    session.verify = str(server.ca_file)
    session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return session


def scrape(server: Server, scraper: requests.Session) -> tuple[str, Series]:
    answer = scraper.get(f"{server.url}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    series: Series = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            series[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return answer.text, series


def value(series: Series, name: str, **labels: str) -> float:
    return series[(name, tuple(sorted(labels.items())))]


def total(series: Series, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in series.items() if n == name and set(labels.items()) <= set(ls))


def audited_rpcs(audit_file: Path) -> collections.Counter[tuple[str, str]]:
    """(method, code class) of every RPC line of the audit trail (one per call, heartbeats on);
    add_tasks' per-task add_task lines are not calls."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in audit_file.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") != "rpc" or "via" in record:
            continue
        outcome = record["outcome"]
        code = "2xx" if outcome == "ok" else outcome.removeprefix("refused:")[0] + "xx"
        counts[(record["method"], code)] += 1
    return counts


def run_pipeline(tmp_path: Path, server: Server) -> None:
    credentials = tmp_path / "admin-credentials"
    credentials.write_text(f"admin:{server.admin_password}\n")
    credentials.chmod(0o600)
    result = cli("run", "--client-config", str(client_conf(tmp_path, server)), "--credentials-file",
                 str(credentials), "--module", "diamond_pipeline", "Report", "--out-dir", str(tmp_path / "out"),
                 "--workers", "2", env={"PYTHONPATH": str(PIPELINES)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_scrape_needs_the_metrics_role_and_that_role_gets_nothing_else(
        configured_server: Callable[..., Server], tmp_path: Path) -> None:
    server = scrape_server(configured_server, tmp_path)
    anonymous = requests.get(f"{server.url}/metrics", verify=str(server.ca_file), timeout=10)
    assert anonymous.status_code == 401
    assert "luigi_appliance" not in anonymous.text
    scraper = bearer(server, "scraper", SCRAPER_PASSWORD)
    _, series = scrape(server, scraper)
    assert value(series, "luigi_appliance_tokens_issued_total", role="metrics") == 1
    # The scrape account: the metrics and the health check, nothing with a task in it.
    assert server.rpc("task_list", session=scraper, status="", upstream_status="").status_code == 403
    for path in ("/", "/history", "/api/worker_list"):
        assert scraper.get(f"{server.url}{path}", timeout=10).status_code == 403, path
    assert scraper.get(f"{server.url}/history/metrics", timeout=10).status_code == 200
    assert server.session("scraper", SCRAPER_PASSWORD).get(f"{server.url}/metrics", timeout=10).status_code == 200
    # A viewer may read the metrics too (roles are ordered); a wrong password may not.
    assert server.session().get(f"{server.url}/metrics", timeout=10).status_code == 200
    assert server.session("scraper", "wrong").get(f"{server.url}/metrics", timeout=10).status_code == 401


def test_every_metric_after_a_pipeline_run_with_plausible_values(
        configured_server: Callable[..., Server], tmp_path: Path) -> None:
    server = scrape_server(configured_server, tmp_path)
    scraper = bearer(server, "scraper", SCRAPER_PASSWORD)
    # One wrong password, refused before any RPC runs (4xx, not audited: no method was reached).
    assert server.rpc("task_list", session=server.session("admin", "not-the-password")).status_code == 401
    run_pipeline(tmp_path, server)
    admin = server.session()
    listed = {status: len(server.rpc("task_list", session=admin, status=status, upstream_status="")
                          .json()["response"]) for status in STATUSES}
    assert listed["DONE"] == 12
    # Two calls of a name no RPC has, and one of a method the policy refuses to a viewer's path.
    for _ in range(2):
        assert admin.post(f"{server.url}/api/no_such_method", data={"data": "{}"}, timeout=10).status_code == 404
    time.sleep(2)  # a snapshot written since the run, and the audit trail flushed
    text, series = scrape(server, scraper)

    names = {name for name, _ in series}
    for metric in METRICS:
        shown = metric.name + ("_bucket" if metric.kind is Kind.HISTOGRAM else "")
        assert shown in names, metric.name
        for name, labels in series:
            if name == shown:
                assert {k for k, _ in labels} - {"le"} == set(metric.labels), (name, labels)
    assert set(PROCESS_METRICS) <= names
    assert value(series, "process_resident_memory_bytes") > 0

    # RPCs: every state-changing call of the worker is in the audit trail; the reads are ours.
    audited = audited_rpcs(tmp_path / "audit.log")
    assert audited[("get_work", "2xx")] > 0 and audited[("add_tasks", "2xx")] > 0
    expected = collections.Counter(audited)
    expected[("task_list", "2xx")] += len(STATUSES)
    expected[("task_list", "4xx")] += 1  # the wrong password
    expected[("other", "4xx")] += 2
    counted = collections.Counter({(dict(ls)["method"], dict(ls)["code"]): int(v) for (n, ls), v in series.items()
                                   if n == "luigi_appliance_rpc_requests_total"})
    assert counted == expected
    for method in {m for m, _ in counted}:
        assert method in policy.RPC_METHODS or method == "other"
        assert value(series, "luigi_appliance_rpc_duration_seconds_count", method=method) == \
            total(series, "luigi_appliance_rpc_requests_total", method=method)
        assert 0 < value(series, "luigi_appliance_rpc_duration_seconds_sum", method=method) < 60
    assert value(series, "luigi_appliance_get_work_duration_seconds_count") == counted[("get_work", "2xx")]
    assert value(series, "luigi_appliance_get_work_duration_seconds_sum") < \
        value(series, "luigi_appliance_rpc_duration_seconds_sum", method="get_work")

    # The scheduler's state, as task_list tells it.
    for status in STATUSES:
        assert value(series, "luigi_appliance_tasks", status=status) == listed[status], status
    assert value(series, "luigi_appliance_workers_active") >= 1  # the run's worker pinged just now
    assert value(series, "luigi_appliance_scheduler_paused") == 0

    # Authentication: the wrong password, the tokens (the scraper's, the worker's), Basic logins.
    assert value(series, "luigi_appliance_auth_failures_total", backend="basic", reason="bad_credentials") == 1
    assert total(series, "luigi_appliance_auth_failures_total") == 1
    assert value(series, "luigi_appliance_tokens_issued_total", role="metrics") == 1
    assert value(series, "luigi_appliance_tokens_issued_total", role="admin") >= 1
    # Each of the worker's calls came with its token, as did the scrape.
    assert value(series, "luigi_appliance_auth_successes_total", backend="bearer") > sum(audited.values())
    assert value(series, "luigi_appliance_auth_successes_total", backend="local") >= len(STATUSES) + 2
    assert value(series, "luigi_appliance_lockouts_total") == 0
    assert value(series, "luigi_appliance_locked_out") == 0

    # History (not configured: all 0), snapshots (every second), audit trail, build.
    assert all(v == 0 for (n, _), v in series.items() if n.startswith("luigi_appliance_history_"))
    assert time.time() - 10 < value(series, "luigi_appliance_snapshot_last_success_timestamp_seconds") <= time.time()
    assert 0 <= value(series, "luigi_appliance_snapshot_age_seconds") < 10
    assert value(series, "luigi_appliance_snapshot_failures_total") == 0
    assert value(series, "luigi_appliance_audit_records_total") >= sum(audited.values())
    assert value(series, "luigi_appliance_audit_write_failures_total") == 0
    info = [dict(ls) for n, ls in series if n == "luigi_appliance_build_info"]
    assert len(info) == 1 and info[0]["version"] and info[0]["luigi_version"]
    assert server.admin_password not in text and SCRAPER_PASSWORD not in text


def test_labels_stay_bounded_after_a_thousand_task_ids(configured_server: Callable[..., Server],
                                                       tmp_path: Path) -> None:
    server = scrape_server(configured_server, tmp_path)
    scraper = bearer(server, "scraper", SCRAPER_PASSWORD)
    admin = server.session()
    # Every kind of call the loop below makes, once, so that their label sets exist before.
    marker = f"Bounded_{uuid.uuid4().hex}"
    assert server.rpc("add_task", session=admin, task_id=f"{marker}_warmup", worker="w-1").status_code == 200
    assert admin.post(f"{server.url}/api/{marker}", data={"data": "{}"}, timeout=10).status_code == 404
    _, before = scrape(server, scraper)
    ids = [f"{marker}_{i}" for i in range(1000)]
    for i, task_id in enumerate(ids):
        assert server.rpc("add_task", session=admin, task_id=task_id, worker=f"w-{i}",
                          family=f"Family{i}").status_code == 200
        # Unknown paths are one "other" method, whatever their name.
        if i % 10 == 0:
            assert admin.post(f"{server.url}/api/{task_id}", data={"data": "{}"}, timeout=10).status_code == 404
    text, after = scrape(server, scraper)

    assert marker not in text and "w-999" not in text and "Family999" not in text
    assert set(after) == set(before), set(after) ^ set(before)  # not one series more
    assert value(after, "luigi_appliance_tasks", status="PENDING") == 1001
    assert value(after, "luigi_appliance_rpc_requests_total", method="add_task", code="2xx") == 1001
    assert value(after, "luigi_appliance_rpc_requests_total", method="other", code="4xx") == 101
    label_sets = collections.Counter(name for name, _ in after)
    assert label_sets["luigi_appliance_tasks"] == len(STATUSES)
    assert len(after) < 400, len(after)


def test_luigis_own_prometheus_collector_is_served_with_ours(configured_server: Callable[..., Server],
                                                            tmp_path: Path) -> None:
    server = scrape_server(configured_server, tmp_path, "[scheduler]\nmetrics_collector = prometheus\n")
    scraper = bearer(server, "scraper", SCRAPER_PASSWORD)
    for task_id in ("Done_1", "Done_2"):
        assert server.rpc("add_task", task_id=task_id, family="Done", status="DONE", worker="w-1").status_code == 200
    _, series = scrape(server, scraper)
    assert value(series, "luigi_task_done_total", family="Done") == 2
    assert value(series, "luigi_appliance_tasks", status="DONE") == 2


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_failures_by_reason_lockouts_and_snapshot_failures(configured_server: Callable[..., Server],
                                                          tmp_path: Path) -> None:
    server = scrape_server(configured_server, tmp_path, "[auth]\nfailure_limit = 3\n")
    scraper = bearer(server, "scraper", SCRAPER_PASSWORD)
    # A token whose account is deleted (and the users file reloaded) before its next use.
    users = ["user", "--users-file", str(tmp_path / "users")]
    assert cli(*users, "add", "dora", "--role", "viewer", input="dora-password-123\n").returncode == 0
    reloads = server.log().count("local accounts from")
    server.send(signal.SIGHUP)
    wait_for(lambda: server.log().count("local accounts from") > reloads, "the users file reloaded")
    dora = bearer(server, "dora", "dora-password-123")
    assert cli(*users, "del", "dora").returncode == 0
    reloads = server.log().count("local accounts from")
    server.send(signal.SIGHUP)
    wait_for(lambda: server.log().count("local accounts from") > reloads, "the users file reloaded")
    assert server.rpc("task_list", session=dora).status_code == 401
    anonymous = requests.Session()
    anonymous.trust_env = False
    anonymous.verify = str(server.ca_file)
    url = f"{server.url}/api/task_list"
    # Three wrong passwords lock "bob" out (the third locks); the fourth is refused unasked.
    for _ in range(3):
        assert anonymous.get(url, auth=("bob", "wrong"), timeout=10).status_code == 401
    assert anonymous.get(url, auth=("bob", "wrong"), timeout=10).status_code == 429
    # A token no key signed, and a session id of the right shape that no login issued.
    assert anonymous.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=10).status_code == 401
    anonymous.cookies.set("__Host-luigi-session", "A" * 43)
    assert anonymous.get(url, timeout=10).status_code == 401
    # A real snapshot write failure: a directory where the snapshot is renamed to.
    snapshot = server.state_dir / "state.pickle"
    snapshot.unlink(missing_ok=True)
    snapshot.mkdir()

    def failures() -> float:
        return value(scrape(server, scraper)[1], "luigi_appliance_snapshot_failures_total")

    wait_for(lambda: failures() >= 1, "a snapshot failure counted")
    _, series = scrape(server, scraper)
    assert value(series, "luigi_appliance_auth_failures_total", backend="basic", reason="bad_credentials") == 3
    assert value(series, "luigi_appliance_auth_failures_total", backend="basic", reason="locked_out") == 1
    assert value(series, "luigi_appliance_auth_failures_total", backend="bearer", reason="invalid_token") == 1
    assert value(series, "luigi_appliance_auth_failures_total", backend="session", reason="invalid_session") == 1
    assert value(series, "luigi_appliance_auth_failures_total", backend="bearer", reason="account_gone") == 1
    assert total(series, "luigi_appliance_auth_failures_total") == 7
    # The name and the address, each locked out once.
    assert value(series, "luigi_appliance_lockouts_total") == 2
    assert value(series, "luigi_appliance_locked_out") == 2
    assert value(series, "luigi_appliance_rpc_requests_total", method="task_list", code="4xx") == 7
    assert value(series, "luigi_appliance_snapshot_age_seconds") >= 0
    snapshot.rmdir()  # the final snapshot at shutdown can be written again
