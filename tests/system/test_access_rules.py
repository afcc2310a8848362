"""Rules of docs/access-control.md that no other test file covers, against a real scheduler."""

from __future__ import annotations

import shutil
import signal
import time

import pytest
import requests
from test_login import browser, login, reads_tasks

from conftest import Server, cli


@pytest.mark.doc_rule("api-data-not-object")
@pytest.mark.parametrize("data", ["[1, 2]", "not json", '"a string"'])
def test_data_that_is_not_a_json_object_is_400(dev_server: Server, data: str) -> None:
    resp = dev_server.session().post(f"{dev_server.url}/api/task_list", data={"data": data}, timeout=10)
    assert resp.status_code == 400
    assert resp.json()["error"] == 400


@pytest.mark.doc_rule("refusal-body")
def test_refusals_are_a_short_json_body_without_traceback(dev_server: Server) -> None:
    session = dev_server.session()
    refusals = [
        session.get(f"{dev_server.url}/api/pause", params={"data": "{}"}, timeout=10),   # 405
        session.post(f"{dev_server.url}/api/no_such_method", data={"data": "{}"}, timeout=10),  # 404
        session.post(f"{dev_server.url}/api/task_list", data={"data": "[]"}, timeout=10),  # 400
        dev_server.session(password="wrong-password-here").get(f"{dev_server.url}/", timeout=10),  # 401
    ]
    for resp in refusals:
        assert resp.status_code >= 400
        body = resp.json()
        assert set(body) == {"error", "reason"} and body["error"] == resp.status_code
        assert len(resp.text) < 200 and "Traceback" not in resp.text
    assert "Traceback" not in dev_server.log()


@pytest.mark.doc_rule("root-redirect")
def test_root_redirects_to_the_visualiser(dev_server: Server) -> None:
    resp = dev_server.session().get(f"{dev_server.url}/", allow_redirects=False, timeout=10)
    assert resp.status_code in (301, 302, 303)
    assert resp.headers["Location"].endswith("static/visualiser/index.html")


@pytest.mark.doc_rule("no-cors")
def test_no_route_allows_options_so_preflights_fail(dev_server: Server) -> None:
    for path in ("/api/pause", "/api/task_list", "/", "/login", "/auth/token"):
        resp = dev_server.session().options(
            dev_server.url + path, timeout=10,
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert resp.status_code == 405, path
        assert "Access-Control-Allow-Origin" not in resp.headers


@pytest.mark.doc_rule("healthz-degraded")
def test_healthz_is_degraded_while_snapshots_fail_and_ok_again_after(configured_server) -> None:
    server: Server = configured_server(snapshot_interval="1")
    snapshot = server.state_dir / "state.pickle"
    assert _health(server) == "ok"
    # A real write failure: a directory where the snapshot must be renamed to.
    snapshot.unlink(missing_ok=True)
    snapshot.mkdir()
    _wait_health(server, "degraded")
    assert "State snapshot failed" in server.log()
    shutil.rmtree(snapshot)
    _wait_health(server, "ok")


def _health(server: Server) -> str:
    resp = requests.get(f"{server.url}/healthz", verify=str(server.ca_file), timeout=5)
    assert resp.status_code == 200
    return resp.text.strip()


def _wait_health(server: Server, expected: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while _health(server) != expected:
        assert time.monotonic() < deadline, f"/healthz never said {expected}:\n{server.log()}"
        time.sleep(0.2)


@pytest.mark.doc_rule("unknown-path-404")
def test_an_authenticated_caller_gets_404_for_unknown_paths(dev_server: Server) -> None:
    resp = dev_server.session().get(f"{dev_server.url}/no/such/page", timeout=10)
    assert resp.status_code == 404 and resp.json()["reason"] == "not found"


@pytest.mark.doc_rule("cross-site-headers")
def test_which_browser_headers_count_as_cross_site(dev_server: Server) -> None:
    session = dev_server.session()
    own = f"https://127.0.0.1:{dev_server.port}"
    refused = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of this host
        {"Origin": "https://evil.example"},
        {"Origin": f"http://127.0.0.1:{dev_server.port}"},  # scheme differs
        {"Origin": f"https://127.0.0.1:{dev_server.port + 1}"},  # port differs
        {"Origin": "null"},
        {"Origin": "null", "Sec-Fetch-Site": "same-site"},
    ]
    for headers in refused:
        resp = session.post(f"{dev_server.url}/api/pause", data={"data": "{}"}, headers=headers, timeout=10)
        assert resp.status_code == 403, headers
    assert dev_server.rpc("is_paused").json()["response"] == {"paused": False}
    for headers in ({"Origin": own}, {"Origin": "null", "Sec-Fetch-Site": "same-origin"}, {}):
        resp = session.post(f"{dev_server.url}/api/unpause", data={"data": "{}"}, headers=headers, timeout=10)
        assert resp.status_code == 200, headers


@pytest.mark.doc_rule("viewer-pause-403")
def test_a_viewer_cannot_pause_from_the_visualiser(dev_server: Server) -> None:
    users = dev_server.state_dir / "users"
    assert cli("user", "--users-file", str(users), "add", "vera", input="vera-long-password\n").returncode == 0
    dev_server.send(signal.SIGHUP)
    viewer = dev_server.session("vera", "vera-long-password")
    deadline = time.monotonic() + 10
    while dev_server.rpc("is_paused", session=viewer).status_code != 200:
        assert time.monotonic() < deadline, dev_server.log()
        time.sleep(0.1)
    # What the visualiser's shim sends: a same-origin POST.
    resp = viewer.post(f"{dev_server.url}/api/pause", data={"data": "{}"},
                       headers={"Origin": dev_server.url, "X-Requested-With": "XMLHttpRequest"}, timeout=10)
    assert resp.status_code == 403
    assert dev_server.rpc("is_paused").json()["response"] == {"paused": False}


@pytest.mark.doc_rule("sessions-end-on-reload")
def test_sighup_logs_every_browser_out(configured_server) -> None:
    server: Server = configured_server()
    s = browser(server)
    assert login(server, s).status_code == 303
    assert reads_tasks(server, s) == 200
    server.send(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while reads_tasks(server, s) != 401:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
