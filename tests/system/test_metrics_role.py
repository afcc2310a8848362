"""The ``metrics`` role end to end: an account made with ``user add --role metrics``, a directory
group mapped to it in [roles], a bearer token for it; and, walked over real HTTPS against a real
scheduler, every route and every RPC method: a scrape account reads /metrics, /history/metrics
and /healthz and nothing else."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import luigi.scheduler
import pytest
import requests
from ldap_server import BIND_PW, PEOPLE, Directory
from test_http_guard import fill_groups

from conftest import Server, cli, write_config
from luigi_appliance import policy
from luigi_appliance.server.app import build_app, route_patterns

SCRAPER = ("scraper", "scraper-password-123")
# What a metrics principal may read (besides the login form and logout, open to anyone).
READABLE = {"/metrics", "/history/metrics", "/healthz"}


class _NoAuth:
    async def authenticate(self, request):
        return None

    def reload(self):
        pass


def route_paths() -> dict[str, policy.RouteRule]:
    """One concrete path per route of policy.ROUTES (groups filled in), with its rule."""
    paths = {}
    for pattern, rule in policy.ROUTES.items():
        path = pattern.rstrip("$").replace("\\.", ".")
        paths[fill_groups(path)] = rule
    return paths


def test_the_walk_covers_every_route_the_app_serves() -> None:
    app = build_app(luigi.scheduler.Scheduler(), [_NoAuth()], tls=True, hsts_max_age=1)
    served = {p if p.endswith("$") else p + "$" for p in route_patterns(app)}
    assert served <= set(policy.ROUTES)
    assert {"/metrics", "/history/metrics", "/auth/token", "/api/x", "/appliance/users/unlock"} <= set(route_paths())


def user(server: Server, *args: str, password: str | None = None) -> str:
    result = cli("user", "--users-file", str(server.state_dir.parent / "users"), *args, input=password)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def scheduler(configured_server, tmp_path: Path) -> Server:
    """A scheduler with history (so /history/metrics has something to serve) and a scrape account."""
    server = configured_server(f"[history]\nbackend = sqlite\nsqlite_path = {tmp_path / 'history.db'}\n", start=False)
    assert "added user scraper (metrics)" in user(server, "add", SCRAPER[0], "--role", "metrics",
                                                  password=SCRAPER[1] + "\n")
    return server.start()


def client(server: Server, *, basic: tuple[str, str] | None = None, token: str | None = None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(server.ca_file)
    s.auth = basic
    if token is not None:
        s.headers["Authorization"] = f"Bearer {token}"
    return s


def walk(server: Server, session: requests.Session) -> dict[str, int]:
    """Status of every route (each allowed HTTP method) and every RPC method, keyed 'METHOD path'."""
    answers = {}
    for path, rule in route_paths().items():
        # The login routes are unauthenticated by design (test_login.py, test_oidc_login.py).
        if rule.role is None and path not in ("/auth/token", "/healthz"):
            continue
        for method in sorted(rule.methods):
            resp = session.request(method, server.url + path, allow_redirects=False, timeout=10)
            answers[f"{method} {path}"] = resp.status_code
    data = {"data": json.dumps({})}
    for name, method_rule in policy.RPC_METHODS.items():
        if method_rule.mutates:
            resp = session.post(f"{server.url}/api/{name}", data=data, timeout=10)
        else:
            resp = session.get(f"{server.url}/api/{name}", params=data, timeout=10)
        answers[f"RPC {name}"] = resp.status_code
    answers["RPC no_such_method"] = session.post(f"{server.url}/api/no_such_method", data=data, timeout=10).status_code
    answers["GET /no/such/page"] = session.get(server.url + "/no/such/page", timeout=10).status_code
    return answers


def assert_only_metrics(answers: dict[str, int], *, exchanges_password: bool) -> None:
    """``exchanges_password``: the walk sent a name and password, which POST /auth/token turns
    into a token for the same account (a token is never exchanged for another: 403)."""
    granted = {what for what, status in answers.items() if 200 <= status < 300}
    tokens = {"POST /auth/token"} if exchanges_password else set()
    assert {f"GET {path}" for path in READABLE} | tokens <= granted, answers
    # HEAD passes the guard on these routes too; whether the handler then answers it (2xx) or
    # not (405) is the handler's: never a refusal of the role.
    heads = {f"HEAD {path}" for path in READABLE}
    assert granted - heads == {f"GET {path}" for path in READABLE} | tokens, answers
    assert all(answers[head] not in (401, 403) for head in heads), answers
    refused = {what: status for what, status in answers.items() if what not in granted | heads}
    assert set(refused.values()) == {403}, refused
    assert len(refused) >= len(policy.RPC_METHODS) + 20


@pytest.mark.doc_rule("metrics-role")
def test_a_metrics_account_reads_metrics_and_nothing_else(scheduler: Server) -> None:
    assert "scraper\tmetrics" in user(scheduler, "list")
    assert_only_metrics(walk(scheduler, client(scheduler, basic=SCRAPER)), exchanges_password=True)
    # The same with a bearer token for the account (what `token issue` prints: no password asked).
    conf = str(scheduler.state_dir.parent / "scheduler.conf")
    result = cli("--config", conf, "token", "issue", "--user", SCRAPER[0])
    assert result.returncode == 0, result.stderr
    assert_only_metrics(walk(scheduler, client(scheduler, token=result.stdout.strip())), exchanges_password=False)


def test_passwd_keeps_or_sets_the_metrics_role(scheduler: Server) -> None:
    user(scheduler, "passwd", SCRAPER[0], password="another-password-456\n")
    assert "scraper\tmetrics" in user(scheduler, "list")
    user(scheduler, "passwd", SCRAPER[0], "--role", "viewer", password="another-password-456\n")
    user(scheduler, "passwd", SCRAPER[0], "--role", "metrics", password="another-password-456\n")
    assert "scraper\tmetrics" in user(scheduler, "list")
    scheduler.send(signal.SIGHUP)
    session = client(scheduler, basic=(SCRAPER[0], "another-password-456"))
    deadline = time.monotonic() + 10
    while session.get(f"{scheduler.url}/metrics", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, scheduler.log()
        time.sleep(0.1)
    assert session.get(f"{scheduler.url}/tasklist", timeout=10).status_code == 403


# ---- a directory group mapped to the metrics role -----------------------------------------------

@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    d = Directory(tmp_path_factory.mktemp("ldap"))
    yield d
    d.stop()


def directory_conf(directory: Directory, tmp_path: Path, roles: str, backend: str = "ldap, local") -> str:
    pw = tmp_path / "ldap-bind.password"
    pw.write_text(BIND_PW + "\n")
    pw.chmod(0o600)
    # The directory's own [roles] table, with luigi-viewers replaced by ``roles``.
    conf = directory.config(bind_password_file=pw, backend=backend)
    assert "luigi-viewers = viewer\n" in conf
    return conf.replace("luigi-viewers = viewer\n", roles)


def ldap_test(directory: Directory, tmp_path: Path, name: str, roles: str) -> subprocess.CompletedProcess:
    conf = write_config(tmp_path / "ldap.conf", directory_conf(directory, tmp_path, roles, backend="ldap")
                        + f"[secrets]\nkey_file = {tmp_path / 'secret.key'}\n")
    return cli("--config", str(conf), "ldap", "test", "--user", name)


@pytest.mark.doc_rule("metrics-role-groups")
def test_a_group_mapped_to_metrics_and_the_highest_role_wins(directory: Directory, tmp_path: Path) -> None:
    # carl is in cycle-a, cycle-b and (through them) luigi-viewers.
    result = ldap_test(directory, tmp_path, "carl", "luigi-viewers = metrics\n")
    assert result.returncode == 0 and "role: metrics" in result.stdout, result.stdout + result.stderr
    result = ldap_test(directory, tmp_path, "carl", "luigi-viewers = viewer\ncycle-a = metrics\n")
    assert result.returncode == 0 and "role: viewer" in result.stdout, result.stdout + result.stderr
    result = ldap_test(directory, tmp_path, "carl", "luigi-viewers = metrics\ncycle-b = worker\n")
    assert "role: worker" in result.stdout, result.stdout


def test_a_directory_account_in_a_metrics_group_scrapes(configured_server, directory: Directory,
                                                        tmp_path: Path) -> None:
    server = configured_server(directory_conf(directory, tmp_path, "luigi-viewers = metrics\n"))
    victor = client(server, basic=("victor", PEOPLE["victor"][0]))
    assert victor.get(f"{server.url}/metrics", timeout=10).status_code == 200
    assert victor.get(f"{server.url}/api/task_list", params={"data": "{}"}, timeout=10).status_code == 403
    assert victor.get(f"{server.url}/", timeout=10).status_code == 403
