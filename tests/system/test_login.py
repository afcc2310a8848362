"""Browser login over real HTTPS against a running scheduler: the form, the session cookie, its
timeouts and rotation, the CSRF token on state-changing calls, logout, and no Basic challenge
to browsers."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from conftest import Server, write_config
from luigi_appliance.auth.session import COOKIE_TLS, SessionStore
from luigi_appliance.config_loader import load_settings
from luigi_appliance.errors import ConfigError

ADMIN_PASSWORD = "admin-password-123"  # what tests/conftest.py's configured_server creates
NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "none",
            "Accept": "text/html,application/xhtml+xml"}


def browser(server: Server) -> requests.Session:
    """A client without Basic credentials, like a browser (verifying the scheduler's certificate)."""
    s = requests.Session()
    s.trust_env = False  # else $REQUESTS_CA_BUNDLE overrides s.verify
    s.verify = str(server.ca_file)
    return s


def login(server: Server, s: requests.Session, password: str = ADMIN_PASSWORD, user: str = "admin",
          next_path: str = "/") -> requests.Response:
    """Fetch the form (its token and cookie), post it from the scheduler's own origin."""
    form = s.get(f"{server.url}/login", params={"next": next_path}, timeout=10)
    assert form.status_code == 200, form.text
    token = re.search(r'name="login_token" value="([0-9a-f]+)"', form.text)
    assert token, form.text
    return s.post(f"{server.url}/login", data={"username": user, "password": password, "next": next_path,
                                               "login_token": token.group(1)},
                  headers={"Origin": server.url}, allow_redirects=False, timeout=30)


def set_cookies(resp: requests.Response) -> list[str]:
    return resp.raw.headers.getlist("Set-Cookie")


def session_cookie(resp: requests.Response) -> str:
    [header] = [c for c in set_cookies(resp) if c.startswith(COOKIE_TLS + "=")]
    return header


def csrf_token(server: Server, s: requests.Session) -> str:
    page = s.get(f"{server.url}/static/visualiser/index.html", timeout=10)
    assert page.status_code == 200
    match = re.search(r'<meta name="luigi-appliance-csrf-token" content="([^"]+)">', page.text)
    assert match, "a session-authenticated visualiser page carries the CSRF token"
    return match.group(1)


def api(server: Server, s: requests.Session, method: str, token: str | None = None) -> requests.Response:
    headers = {"Origin": server.url}
    if token is not None:
        headers["X-CSRF-Token"] = token
    return s.post(f"{server.url}/api/{method}", data={"data": "{}"}, headers=headers, timeout=10)


def paused(server: Server) -> bool:
    return server.rpc("is_paused").json()["response"]["paused"]


def reads_tasks(server: Server, s: requests.Session) -> int:
    return s.get(f"{server.url}/api/task_list", params={"data": '{"status": "", "upstream_status": ""}'},
                 timeout=10).status_code


@pytest.fixture
def server(configured_server: Callable[..., Server]) -> Server:
    return configured_server()


@pytest.mark.doc_rule("session-cookie")
def test_login_sets_a_hardened_session_cookie_and_redirects(server: Server) -> None:
    s = browser(server)
    resp = login(server, s, next_path="/history?sort=desc")
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/history?sort=desc"
    cookie = session_cookie(resp)
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite", "max-age"} <= attributes
    assert "domain" not in attributes  # __Host- cookies must not have one
    assert "; Path=/" in cookie and "SameSite=Strict" in cookie and "Max-Age=28800" in cookie
    # The form's own cookie is cleared, and has the same hardening.
    [form_cookie] = [c for c in set_cookies(resp) if c.startswith("__Host-luigi-login=")]
    assert "Secure" in form_cookie and "HttpOnly" in form_cookie and "SameSite=Strict" in form_cookie
    assert reads_tasks(server, s) == 200
    assert s.get(f"{server.url}/static/visualiser/index.html", headers=NAVIGATE, timeout=10).status_code == 200
    assert re.search(r"Browser login: user 'admin' \(role admin\) from 127\.0\.0\.1", server.log())


@pytest.mark.doc_rule("login-same-answer")
def test_wrong_password_and_unknown_user_get_the_same_answer(server: Server) -> None:
    answers = []
    for user, password in (("admin", "wrong-password-1"), ("nobody-here", "wrong-password-1")):
        s = browser(server)
        resp = login(server, s, password=password, user=user)
        assert not [c for c in set_cookies(resp) if c.startswith(COOKIE_TLS)]
        assert reads_tasks(server, s) == 401
        # The page differs only by the fresh form token.
        answers.append((resp.status_code, re.sub(r'value="[0-9a-f]{64}"', "", resp.text)))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401 and "Wrong user name or password." in answers[0][1]


@pytest.mark.doc_rule("fresh-session-id")
def test_login_issues_a_fresh_session_id_every_time(server: Server) -> None:
    s = browser(server)
    planted = "A" * 43  # session fixation: an id chosen before login must never become valid
    s.cookies.set(COOKIE_TLS, planted, domain="127.0.0.1", path="/")
    first = login(server, s)
    first_id = s.cookies.get(COOKIE_TLS)
    assert first.status_code == 303 and first_id not in (None, planted)
    second = login(server, s)  # the browser still sends the first id
    second_id = s.cookies.get(COOKIE_TLS)
    assert second.status_code == 303 and second_id not in (first_id, planted)
    assert reads_tasks(server, s) == 200
    for old in (planted, first_id):
        replay = browser(server)
        replay.cookies.set(COOKIE_TLS, old, domain="127.0.0.1", path="/")
        assert reads_tasks(server, replay) == 401, "the pre-login id must be dead"


@pytest.mark.doc_rule("no-open-redirect")
def test_next_cannot_leave_the_scheduler(server: Server) -> None:
    s = browser(server)
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "\\\\evil.example",
                   "javascript:alert(1)", "http:/evil.example", "/\tevil", "evil.example", ""):
        resp = login(server, s, next_path=target)
        assert resp.status_code == 303, target
        assert resp.headers["Location"] == "/", target
    assert login(server, s, next_path="/tasklist?x=1").headers["Location"] == "/tasklist?x=1"


@pytest.mark.doc_rule("login-form-token")
def test_login_form_needs_its_token_cookie_and_same_origin(server: Server) -> None:
    s = browser(server)
    form = s.get(f"{server.url}/login", timeout=10)
    token = re.search(r'name="login_token" value="([0-9a-f]+)"', form.text).group(1)
    data = {"username": "admin", "password": ADMIN_PASSWORD, "next": "/", "login_token": token}
    post = f"{server.url}/login"
    no_token = s.post(post, data={**data, "login_token": ""}, allow_redirects=False, timeout=10)
    other_browser = browser(server).post(post, data=data, allow_redirects=False, timeout=10)  # no form cookie
    cross_origin = s.post(post, data=data, headers={"Origin": "https://evil.example"}, allow_redirects=False,
                          timeout=10)
    cross_site = s.post(post, data=data, headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False,
                        timeout=10)
    assert [r.status_code for r in (no_token, other_browser, cross_origin, cross_site)] == [403, 403, 403, 403]
    assert s.cookies.get(COOKIE_TLS) is None
    # The refused form came back with a new form cookie and token: the old pair is spent.
    stale = s.post(post, data=data, headers={"Origin": server.url}, allow_redirects=False, timeout=30)
    assert stale.status_code == 403 and s.cookies.get(COOKIE_TLS) is None
    assert login(server, s).status_code == 303 and s.cookies.get(COOKIE_TLS)


@pytest.mark.doc_rule("csrf-token")
def test_session_state_changes_need_the_csrf_token(server: Server) -> None:
    s = browser(server)
    assert login(server, s).status_code == 303
    token = csrf_token(server, s)
    other = browser(server)
    assert login(server, other).status_code == 303
    other_token = csrf_token(server, other)
    assert other_token != token
    for wrong in (None, "", "x" * len(token), other_token, token[:-1]):
        refused = api(server, s, "pause", wrong)
        assert refused.status_code == 403, (wrong, refused.text)
        assert refused.json()["reason"] == "CSRF token missing or wrong"
    assert not paused(server)
    assert reads_tasks(server, s) == 200  # reads need no token
    accepted = api(server, s, "pause", token)
    assert accepted.status_code == 200, accepted.text
    assert paused(server)
    # Basic callers (workers, scripts) are no browsers riding a cookie: no token for them.
    assert server.rpc("unpause").status_code == 200
    assert not paused(server)


@pytest.mark.doc_rule("browsers-no-challenge", "who-is-a-browser")
def test_browsers_get_the_login_form_not_a_basic_challenge(server: Server) -> None:
    s = browser(server)
    page = s.get(f"{server.url}/static/visualiser/index.html?x=1", headers=NAVIGATE, allow_redirects=False,
                 timeout=10)
    assert page.status_code == 303
    assert page.headers["Location"] == "/login?next=%2Fstatic%2Fvisualiser%2Findex.html%3Fx%3D1"
    assert "WWW-Authenticate" not in page.headers
    old_browser = s.get(f"{server.url}/history", headers={"Accept": "text/html"}, allow_redirects=False, timeout=10)
    assert old_browser.status_code == 303 and old_browser.headers["Location"] == "/login?next=%2Fhistory"
    for headers in ({"X-Requested-With": "XMLHttpRequest", "Accept": "application/json"},
                    {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}, NAVIGATE):
        call = s.get(f"{server.url}/api/task_list", headers=headers, allow_redirects=False, timeout=10)
        assert call.status_code == 401, headers
        assert "WWW-Authenticate" not in call.headers
    script = s.get(f"{server.url}/static/visualiser/js/luigi.js", headers={"Sec-Fetch-Mode": "no-cors",
                                                                           "Sec-Fetch-Dest": "script"}, timeout=10)
    assert script.status_code == 401 and "WWW-Authenticate" not in script.headers
    # Programs keep the challenge.
    for headers in ({}, {"Accept": "*/*", "User-Agent": "curl/8.0"}):
        plain = s.get(f"{server.url}/api/task_list", headers=headers, timeout=10)
        assert plain.status_code == 401
        assert plain.headers["WWW-Authenticate"].startswith("Basic ")


@pytest.mark.doc_rule("logout")
def test_logout_ends_the_session(server: Server) -> None:
    s = browser(server)
    assert login(server, s).status_code == 303
    session_id = s.cookies.get(COOKIE_TLS)
    token = csrf_token(server, s)
    assert s.get(f"{server.url}/logout", timeout=10).status_code == 405
    forged = s.post(f"{server.url}/logout", data={"csrf_token": "wrong"}, headers={"Origin": server.url},
                    allow_redirects=False, timeout=10)
    assert forged.status_code == 403 and reads_tasks(server, s) == 200
    out = s.post(f"{server.url}/logout", data={"csrf_token": token}, headers={"Origin": server.url},
                 allow_redirects=False, timeout=10)
    assert out.status_code == 303 and out.headers["Location"] == "/login"
    cleared = session_cookie(out)
    assert re.match(f'^{COOKIE_TLS}=(""|);', cleared) and "Secure" in cleared and "Path=/" in cleared
    assert s.cookies.get(COOKIE_TLS) is None
    replay = browser(server)
    replay.cookies.set(COOKIE_TLS, session_id, domain="127.0.0.1", path="/")
    assert reads_tasks(server, replay) == 401, "the session must be gone server-side, not only the cookie"
    assert "Browser logout: user 'admin'" in server.log()


@pytest.mark.doc_rule("session-timeouts")
def test_idle_timeout_ends_an_unused_session(configured_server: Callable[..., Server]) -> None:
    server = configured_server("[session]\nidle_timeout = 2s\nabsolute_timeout = 1h\n")
    s = browser(server)
    assert login(server, s).status_code == 303
    assert reads_tasks(server, s) == 200
    time.sleep(2.5)
    assert reads_tasks(server, s) == 401


@pytest.mark.doc_rule("session-timeouts")
def test_activity_keeps_a_session_until_the_absolute_timeout(configured_server: Callable[..., Server]) -> None:
    server = configured_server("[session]\nidle_timeout = 4s\nabsolute_timeout = 7s\n")
    s = browser(server)
    resp = login(server, s)
    started = time.monotonic()  # after the login: the session is at least this old at each check
    assert resp.status_code == 303 and "Max-Age=7;" in session_cookie(resp) + ";"
    # Used every 1.5 s: longer in total than the idle timeout, so activity is what keeps it alive.
    for _ in range(3):
        time.sleep(1.5)
        assert reads_tasks(server, s) == 200
    assert time.monotonic() - started > 4
    while time.monotonic() - started < 7.5:
        time.sleep(1.0)
        reads_tasks(server, s)  # still busy; the absolute timeout ends it anyway
    assert reads_tasks(server, s) == 401


@pytest.mark.doc_rule("login-logs-no-secrets")
def test_no_password_or_cookie_in_the_log(server: Server) -> None:
    wrong = "Wrong-Passw0rd-Never-Logged"
    login(server, browser(server), password=wrong)
    s = browser(server)
    resp = login(server, s)
    assert resp.status_code == 303
    token = csrf_token(server, s)
    assert api(server, s, "pause", token).status_code == 200
    secrets = {"password": ADMIN_PASSWORD, "wrong password": wrong, "session id": s.cookies.get(COOKIE_TLS),
               "csrf token": token}
    log = server.log()
    assert "Browser login: user 'admin'" in log
    for what, value in secrets.items():
        assert value and value not in log, what


def test_session_store_keeps_only_hashes_and_expires() -> None:
    """The store alone, with a hand-driven clock (the server tests above use real time)."""
    from luigi_appliance.auth import Principal, Role

    now = [1000.0]
    store = SessionStore(idle_timeout=10, absolute_timeout=25, clock=lambda: now[0])
    session_id, session = store.create(Principal("alice", Role.VIEWER, "local"))
    [key] = store._sessions
    assert key == hashlib.sha256(session_id.encode()).digest()
    assert session.csrf_token != session_id
    for step in (9, 9, 6):  # used within the idle timeout each time
        now[0] += step
        assert store.get(session_id) is session
    now[0] += 1  # 25 s after login
    assert store.get(session_id) is None and len(store) == 0
    other_id, _ = store.create(Principal("bob", Role.VIEWER, "local"))
    now[0] += 10
    assert store.get(other_id) is None
    assert store.get("not-a-session-id") is None


@pytest.mark.parametrize("line", ["idle_timeout = 0", "absolute_timeout = 40d", "idle_timeout = soon",
                                  "lifetime = 1h"])
def test_session_config_is_checked(tmp_path: Path, line: str) -> None:
    conf = write_config(tmp_path / "scheduler.conf", f"[session]\n{line}\n")
    with pytest.raises(ConfigError, match="session"):
        load_settings([conf], check_files=False)


def test_session_config_defaults(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "scheduler.conf", "[session]\nidle_timeout = 15m\n")
    settings = load_settings([conf], check_files=False)
    assert (settings.session.idle_timeout, settings.session.absolute_timeout) == (900, 8 * 3600)
