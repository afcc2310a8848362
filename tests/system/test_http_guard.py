"""The guard in front of every route, checked over real HTTPS against a running scheduler."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import socket
import ssl
import time

import luigi.scheduler
import pytest
import requests

from conftest import Server, cli
from luigi_appliance import policy
from luigi_appliance.auth import Role
from luigi_appliance.server.app import build_app, route_patterns


class _NoAuth:
    async def authenticate(self, request):
        return None

    def reload(self):
        pass


def fill_groups(path: str) -> str:
    """``path`` with each group of its pattern replaced by a value the group matches: "x", or the
    first alternative of ``(a|b)``, or a request id; a group none of these match fails here
    (probing another route's path instead would test the wrong rule)."""
    def value(group: re.Match) -> str:
        inner = group.group(0)[1:-1]
        for candidate in ("x", inner.split("|")[0], "apr-0"):
            if re.fullmatch(inner, candidate):
                return candidate
        raise AssertionError(f"no sample value for route group {group.group(0)} in {path}")
    return re.sub(r"\((?:\.\*\??|[^)]*)\)", value, path)


def concrete_routes() -> list[tuple[str, str, policy.RouteRule]]:
    """(path, HTTP method to probe it with, its rule) for every route the application serves:
    one real URL path per route (groups filled in), probed with GET unless the route is POST only."""
    app = build_app(luigi.scheduler.Scheduler(), [_NoAuth()], tls=True, hsts_max_age=1)
    routes = []
    for pattern in route_patterns(app):
        rule = policy.ROUTES[pattern if pattern.endswith("$") else pattern + "$"]
        path = pattern.rstrip("$").replace("\\.", ".")
        path = fill_groups(path)
        routes.append((path, "GET" if "GET" in rule.methods else "POST", rule))
    return routes


def concrete_paths() -> list[str]:
    return [path for path, _, _ in concrete_routes()]


def test_route_enumeration_covers_luigi_app() -> None:
    paths = concrete_paths()
    for expected in ("/api/x", "/", "/history", "/tasklist", "/metrics", "/static/x", "/healthz",
                     "/static/visualiser/index.html", "/history/by_params/x"):
        assert expected in paths


@pytest.mark.doc_rule("programs-challenge", "healthz-open", "open-routes")
def test_every_route_answers_401_without_or_with_wrong_credentials(dev_server: Server) -> None:
    anonymous = requests.Session()
    anonymous.trust_env = False
    anonymous.verify = str(dev_server.ca_file)
    wrong = dev_server.session(password="not-the-password-at-all")
    unknown = dev_server.session(user="nobody", password="whatever-password")
    checked = locked = 0
    for path, method, rule in [*concrete_routes(), ("/no/such/page", "GET", policy.FALLBACK)]:
        if rule.role is None:  # unauthenticated by design (test_login.py, test_oidc_login.py, /auth/token)
            continue
        for session in (anonymous, wrong, unknown):
            resp = session.request(method, dev_server.url + path, allow_redirects=False, timeout=10)
            if resp.status_code == 429 and session is not anonymous:
                # Repeated wrong passwords from one address lock it out (tests/system/test_ldap.py
                # covers the lockout itself); the answer still reveals nothing about the route.
                assert int(resp.headers["Retry-After"]) > 0
                locked += 1
                continue
            assert resp.status_code == 401, (path, resp.status_code)
            assert resp.headers["WWW-Authenticate"].startswith("Basic ")
            checked += 1
    assert checked >= 15 + 4 and locked > 0
    # The healthz route is the one exception, and it says nothing but ok/degraded.
    resp = anonymous.get(dev_server.url + "/healthz", timeout=10)
    assert resp.status_code == 200 and resp.text.strip() == "ok"


@pytest.mark.doc_rule("api-post-only", "get-never-mutates")
def test_get_on_every_state_changing_method_is_405(dev_server: Server) -> None:
    session = dev_server.session()
    mutating = [name for name, rule in policy.RPC_METHODS.items() if rule.mutates]
    assert len(mutating) >= 20
    for name in mutating:
        resp = session.get(f"{dev_server.url}/api/{name}", params={"data": "{}"}, timeout=10)
        assert resp.status_code == 405, name
        assert resp.headers["Allow"] == "POST"
    # Nothing was paused by those GETs; POST does it.
    assert dev_server.rpc("is_paused").json()["response"] == {"paused": False}
    assert dev_server.rpc("pause").status_code == 200
    assert dev_server.rpc("is_paused").json()["response"] == {"paused": True}


@pytest.mark.doc_rule("read-only-get")
def test_read_only_methods_work_with_get(dev_server: Server) -> None:
    resp = dev_server.session().get(f"{dev_server.url}/api/task_list",
                                    params={"data": json.dumps({"status": "", "upstream_status": ""})}, timeout=10)
    assert resp.status_code == 200 and resp.json() == {"response": {}}


@pytest.mark.doc_rule("api-unknown-404")
def test_unknown_method_is_404(dev_server: Server) -> None:
    assert dev_server.rpc("no_such_method").status_code == 404


@pytest.mark.doc_rule("body-limit")
def test_oversized_body_is_413_and_chunked_is_411(dev_server: Server) -> None:
    session = dev_server.session()
    big = {"data": json.dumps({"worker": "w", "task_id": "x" * (3 * 1024 * 1024)})}
    resp = session.post(f"{dev_server.url}/api/add_task", data=big, timeout=30)
    assert resp.status_code == 413
    assert resp.headers["X-Content-Type-Options"] == "nosniff"

    def chunks():
        yield b"data=%7B%7D"

    resp = session.post(f"{dev_server.url}/api/ping", data=chunks(), timeout=10)
    assert resp.status_code == 411
    # The server is still fine afterwards.
    assert dev_server.rpc("ping", worker="w").status_code == 200


def test_body_far_over_the_drain_limit_is_answered_without_reading_it(dev_server: Server) -> None:
    ctx = ssl.create_default_context(cafile=str(dev_server.ca_file))
    with socket.create_connection(("127.0.0.1", dev_server.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"POST /api/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
        answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 ")


@pytest.mark.doc_rule("security-headers")
def test_security_headers_and_no_version(dev_server: Server) -> None:
    resp = dev_server.session().get(f"{dev_server.url}/static/visualiser/index.html", timeout=10)
    assert resp.status_code == 200
    h = resp.headers
    assert "Server" not in h
    assert "tornado" not in json.dumps(dict(h)).lower()
    assert h["Strict-Transport-Security"].startswith("max-age=")
    assert h["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert "'unsafe-inline'" not in h["Content-Security-Policy"].split("script-src")[1].split(";")[0]


@pytest.mark.doc_rule("csp")
def test_visualiser_page_works_under_its_csp(dev_server: Server) -> None:
    """Every inline script of the served page is allowed by hash; the POST shim is loaded."""
    session = dev_server.session()
    resp = session.get(f"{dev_server.url}/static/visualiser/index.html", timeout=10)
    csp = resp.headers["Content-Security-Policy"]
    inline = re.findall(r"<script>(.*?)</script>", resp.text, re.S)
    assert inline, "luigi's index.html has one inline bootstrap script"
    for body in inline:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert not re.search(r"\son[a-z]+=", resp.text), "inline event handlers would be blocked by the CSP"
    assert '<script src="../../appliance/visualiser-post.js"></script>' in resp.text
    shim = session.get(f"{dev_server.url}/appliance/visualiser-post.js", timeout=10)
    assert shim.status_code == 200 and '"pause": true' in shim.text and '"task_list"' not in shim.text
    for asset in ("js/luigi.js", "lib/jquery-1.10.0.min.js", "css/luigi.css"):
        assert session.get(f"{dev_server.url}/static/visualiser/{asset}", timeout=10).status_code == 200
    root = session.get(dev_server.url + "/", allow_redirects=False, timeout=10)
    assert root.status_code == 302 and root.headers["Location"] == "static/visualiser/index.html"


@pytest.mark.doc_rule("cross-site-403")
def test_cross_site_browser_post_is_refused(dev_server: Server) -> None:
    session = dev_server.session()
    resp = session.post(f"{dev_server.url}/api/pause", data={"data": "{}"},
                        headers={"Origin": "https://evil.example"}, timeout=10)
    assert resp.status_code == 403
    same = session.post(f"{dev_server.url}/api/pause", data={"data": "{}"},
                        headers={"Origin": f"https://127.0.0.1:{dev_server.port}"}, timeout=10)
    assert same.status_code == 200


@pytest.mark.doc_rule("roles-ordered", "api-role-403")
def test_roles_limit_methods_and_sighup_reloads_users(dev_server: Server) -> None:
    users = dev_server.state_dir / "users"
    for name, role in (("viewer1", Role.VIEWER), ("worker1", Role.WORKER)):
        result = cli("user", "--users-file", str(users), "add", name, "--role", str(role),
                     input=f"{name}-long-password\n")
        assert result.returncode == 0, result.stderr
    viewer = dev_server.session("viewer1", "viewer1-long-password")
    assert dev_server.rpc("task_list", session=viewer, status="", upstream_status="").status_code == 401
    dev_server.send(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while dev_server.rpc("task_list", session=viewer, status="", upstream_status="").status_code != 200:
        assert time.monotonic() < deadline, dev_server.log()
        time.sleep(0.1)
    assert dev_server.rpc("add_task", session=viewer, worker="v", task_id="T1").status_code == 403
    worker = dev_server.session("worker1", "worker1-long-password")
    assert dev_server.rpc("add_task", session=worker, worker="w1", task_id="T1").status_code == 200
    assert dev_server.rpc("pause", session=worker).status_code == 403
    assert dev_server.rpc("pause").status_code == 200  # admin


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
@pytest.mark.doc_rule("route-method-405")
def test_other_http_methods_are_405(dev_server: Server, method: str) -> None:
    resp = dev_server.session().request(method, f"{dev_server.url}/api/ping", timeout=10)
    assert resp.status_code == 405
