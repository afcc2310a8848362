"""Browser single sign-on (server/oidc_login.py) against a real OpenID Provider and a real
scheduler, driven with requests as a browser would be (cookies, redirects, the IdP's own login
page): the code flow with PKCE, what is refused (tampered state, another browser, a replayed
callback, a wrong nonce, a mix-up ``iss``, an IdP error, no role, an open redirect), the session's
lifetime bounded by the ID token and its renewal, RP-initiated and back-channel logout, two
issuers at once, and the password form switched off. The Chromium test is
test_oidc_login_browser.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from oidc_fixture import OidcClient, OidcProvider, callback_params, jwt_parts

from conftest import Server, cli
from luigi_appliance.auth.session import COOKIE_TLS

CLIENT = "luigi-appliance"
ROLES = "group:luigi-admins -> admin; group:luigi-operators -> operator; group:luigi-viewers -> viewer"
_META_REFRESH = re.compile(r'<meta http-equiv="refresh" content="0; url=([^"]*)">')
_CSRF_META = re.compile(r'<meta name="luigi-appliance-csrf-token" content="([^"]+)"')


@dataclass
class Sso:
    """A scheduler configured with ``[oidc.NAME]`` for each provider, registered at each."""

    server: Server
    idps: dict[str, OidcProvider]
    audit_file: Path

    def browser(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.server.ca_file)
        return session

    def audit(self, event: str | None = None) -> list[dict]:
        lines = [json.loads(line) for line in self.audit_file.read_text().splitlines() if line.strip()]
        return [r for r in lines if event is None or r.get("event") == event]

    def start(self, browser: requests.Session, name: str = "corp", next_path: str | None = None) -> str:
        """GET /login/oidc/NAME: the authorization request the scheduler redirects to."""
        query = "?" + urlencode({"next": next_path}) if next_path is not None else ""
        answer = browser.get(f"{self.server.url}/login/oidc/{name}{query}", allow_redirects=False, timeout=10)
        assert answer.status_code == 303, answer.text
        return answer.headers["location"]

    def log_in(self, user: str, name: str = "corp", browser: requests.Session | None = None,
               next_path: str | None = None) -> tuple[requests.Session, requests.Response]:
        """The whole login: start, the IdP's login page as ``user``, the callback's answer."""
        browser = browser or self.browser()
        back = self.idps[name].login(browser, self.start(browser, name, next_path), user)
        return browser, browser.get(back, allow_redirects=False, timeout=10)


def onward(answer: requests.Response) -> str:
    """Where a page that sends the browser on (meta refresh) sends it."""
    assert answer.status_code == 200, answer.text
    found = _META_REFRESH.search(answer.text)
    assert found, answer.text
    return unescape(found.group(1))


def csrf_token(sso: Sso, browser: requests.Session) -> str:
    page = browser.get(f"{sso.server.url}/static/visualiser/index.html", timeout=10)
    assert page.status_code == 200, page.text
    found = _CSRF_META.search(page.text)
    assert found
    return found.group(1)


def api_status(sso: Sso, browser: requests.Session) -> int:
    return browser.get(f"{sso.server.url}/api/is_paused", headers={"X-Requested-With": "XMLHttpRequest"},
                       timeout=10).status_code


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def oidc_section(name: str, idp: OidcProvider, options: str = "") -> str:
    return f"""
[oidc.{name}]
issuer = {idp.issuer}
ca_file = {idp.ca_file}
browser_login = true
client_id = {CLIENT}
client_secret_file = {idp.client(CLIENT).secret_file}
scopes = openid profile email groups
roles = {ROLES}
{options}
"""


@pytest.fixture
def sso(configured_server: Callable[..., Server], tmp_path: Path) -> Iterator[Callable[..., Sso]]:
    """Factory: providers ``names`` (options for OidcProvider, e.g. ttl), the scheduler with an
    ``[oidc.NAME]`` section for each, the scheduler's URIs registered at each IdP (the IdP trusts
    the scheduler's certificate for back-channel logout)."""
    started: list[OidcProvider] = []

    def make(names: tuple[str, ...] = ("corp",), extra: str = "", refresh: bool = True,
             **provider_options: object) -> Sso:
        state_ca = tmp_path / "state" / "tls-selfsigned.crt"  # made when the scheduler starts
        idps = {name: OidcProvider(name=name, backchannel_ca_files=(state_ca,), **provider_options)  # type: ignore[arg-type]
                for name in names}
        started.extend(idps.values())
        server = configured_server("".join(oidc_section(n, idp) for n, idp in idps.items()) + extra, start=False)
        grants = ("authorization_code", "refresh_token") if refresh else ("authorization_code",)
        for name, idp in idps.items():
            idp.set_client(OidcClient(CLIENT, redirect_uris=(f"{server.url}/login/oidc/{name}/callback",),
                                      post_logout_redirect_uris=(f"{server.url}/login",),
                                      backchannel_logout_uri=f"{server.url}/login/oidc/{name}/backchannel-logout",
                                      grant_types=grants))
        server.start()
        for idp in idps.values():
            idp.start()
        return Sso(server, idps, tmp_path / "audit.log")

    yield make
    for idp in started:
        idp.destroy()


def wait_for_audit(sso: Sso, predicate: Callable[[dict], bool], timeout: float = 10) -> dict:
    """The audit is written by a background thread, about once a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sso.audit_file.exists():
            found = [r for r in sso.audit() if predicate(r)]
            if found:
                return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no such audit record in {sso.audit_file.read_text() if sso.audit_file.exists() else ''}")


def no_token_anywhere(sso: Sso, *secrets: str) -> None:
    """Neither a JWT (what every ID, refresh or logout token of this IdP is) nor ``secrets``."""
    time.sleep(1.2)  # the audit's writer flushes about once a second
    for text in (sso.server.log(), sso.audit_file.read_text()):
        assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", text)
        for secret in secrets:
            assert secret not in text


@pytest.mark.doc_rule("sso-flow-checks")
def test_code_flow_with_pkce_logs_in_and_is_audited(sso: Callable[..., Sso]) -> None:
    env = sso()
    browser = env.browser()
    started = browser.get(f"{env.server.url}/login/oidc/corp?next=%2Fhistory", allow_redirects=False, timeout=10)
    assert started.status_code == 303
    # Lax: the IdP's redirect back is a cross-site top-level GET.
    assert re.fullmatch(r"__Host-luigi-oidc=[A-Za-z0-9_-]{43}; HttpOnly; Max-Age=600; Path=/; SameSite=Lax; Secure",
                        started.headers["set-cookie"]), started.headers["set-cookie"]
    authorize = started.headers["location"]
    query = callback_params(authorize)
    assert authorize.startswith(env.idps["corp"].discovery()["authorization_endpoint"] + "?")
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["response_type"] == "code" and query["client_id"] == CLIENT
    assert query["redirect_uri"] == f"{env.server.url}/login/oidc/corp/callback"
    assert set(query["scope"].split()) == {"openid", "profile", "email", "groups"}
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32 and query["state"] != query["nonce"]

    back = env.idps["corp"].login(browser, authorize, "alice")
    params = callback_params(back)
    assert params["iss"] == env.idps["corp"].issuer  # RFC 9207: checked by the scheduler
    answer = browser.get(back, allow_redirects=False, timeout=10)
    assert onward(answer) == "/history"
    assert "__Host-luigi-session=" in answer.headers["set-cookie"] and "SameSite=Strict" in answer.headers["set-cookie"]
    assert api_status(env, browser) == 200
    page = browser.get(f"{env.server.url}/static/visualiser/index.html", timeout=10).text
    assert 'id="appliance-user">alice <span class="appliance-role">(admin)</span>' in page

    record = wait_for_audit(env, lambda r: r["event"] == "login" and r["outcome"] == "success")
    assert record["principal"] == "alice" and record["issuer"] == "corp" and record["subject"] == "alice"
    assert record["backend"] == "oidc:corp" and record["role"] == "admin"
    assert 3000 <= record["session_lifetime"] <= 3600  # the IdP's ID tokens: one hour
    assert record["renewable"] is True
    # The callback is answered once: a replay (same code, state and cookie) is refused.
    replay = browser.get(back, allow_redirects=False, timeout=10)
    assert replay.status_code == 400 and "did not start in this browser" in replay.text
    no_token_anywhere(env, params["code"])


@pytest.mark.doc_rule("sso-flow-checks")
def test_what_the_callback_refuses(sso: Callable[..., Sso]) -> None:
    env = sso()
    idp = env.idps["corp"]

    def refused(answer: requests.Response, status: int, words: str) -> None:
        assert answer.status_code == status, answer.text
        assert words in unescape(answer.text) and 'id="login-error"' in answer.text and "Traceback" not in answer.text
        assert "__Host-luigi-session=" not in answer.headers.get("set-cookie", "")

    # A tampered state.
    browser = env.browser()
    back = idp.login(browser, env.start(browser), "alice")
    refused(browser.get(with_query(back, state="x" * 43), allow_redirects=False, timeout=10), 400,
            "did not start in this browser")
    # The right callback in another browser (login CSRF: no flow cookie there).
    browser = env.browser()
    back = idp.login(browser, env.start(browser), "alice")
    refused(env.browser().get(back, allow_redirects=False, timeout=10), 400, "did not start in this browser")
    # A code with an ID token of another login's nonce.
    browser = env.browser()
    authorize = env.start(browser)
    back = idp.login(browser, with_query(authorize, nonce="another-login-s-nonce-0123456789abcdef"), "alice")
    refused(browser.get(back, allow_redirects=False, timeout=10), 401, "Signing in with corp failed")
    # A mix-up: the answer says it comes from another issuer (RFC 9207).
    browser = env.browser()
    back = idp.login(browser, env.start(browser), "alice")
    refused(browser.get(with_query(back, iss="https://evil.example.test"), allow_redirects=False, timeout=10), 401,
            "Signing in with corp failed")
    # The IdP's own error (the user said no at the IdP): on the login page, as text.
    browser = env.browser()
    state = callback_params(env.start(browser))["state"]
    answer = browser.get(f"{env.server.url}/login/oidc/corp/callback?" + urlencode(
        {"error": "access_denied", "error_description": "<b>denied</b>", "state": state}), allow_redirects=False,
        timeout=10)
    refused(answer, 401, "corp did not sign you in (access_denied)")
    assert "<b>denied</b>" not in answer.text
    # Verified, but no rule gives the identity a role.
    _, answer = env.log_in("nobody")
    refused(answer, 403, "Your account at corp has no role on this scheduler")
    # An issuer that is not configured.
    assert env.browser().get(f"{env.server.url}/login/oidc/other", allow_redirects=False,
                             timeout=10).status_code == 404

    wait_for_audit(env, lambda r: r["event"] == "login" and r.get("reason") == "no_role")
    reasons = [r["reason"] for r in env.audit("login") if r["outcome"] == "refused"]
    assert reasons == ["bad_state", "bad_state", "bad_nonce", "unknown_issuer", "idp_error", "no_role"], reasons
    assert all(r["issuer"] == "corp" for r in env.audit("login"))
    # Counted like every refused authentication, by the issuer and the refusal class.
    metrics = env.server.session().get(f"{env.server.url}/metrics", timeout=10).text
    for reason in ("bad_nonce", "unknown_issuer", "no_role"):
        assert f'luigi_appliance_auth_failures_total{{backend="oidc:corp",reason="{reason}"}} 1.0' in metrics
    assert "Traceback" not in env.server.log()
    no_token_anywhere(env)


@pytest.mark.doc_rule("no-open-redirect")
@pytest.mark.parametrize("target", ["https://evil.example.test/", "//evil.example.test/x", "/\\evil.example.test"])
def test_next_is_kept_only_as_a_path_here(sso: Callable[..., Sso], target: str) -> None:
    env = sso()
    _, answer = env.log_in("victor", next_path=target)
    assert onward(answer) == "/"


@pytest.mark.doc_rule("sso-small-cookie")
def test_a_user_in_300_groups_gets_a_small_cookie(sso: Callable[..., Sso]) -> None:
    env = sso()
    browser, answer = env.log_in("many")
    onward(answer)
    cookie = next(c for c in browser.cookies if c.name == COOKIE_TLS)
    assert len(cookie.value) == 43  # only our session id
    assert len(answer.headers["set-cookie"]) < 300  # the whole header, both cookies' attributes included
    assert api_status(env, browser) == 200
    page = browser.get(f"{env.server.url}/static/visualiser/index.html", timeout=10).text
    assert 'id="appliance-user">many <span class="appliance-role">(viewer)</span>' in page


@pytest.mark.doc_rule("sso-lifetime")
def test_the_session_ends_with_the_id_token_without_a_refresh_token(sso: Callable[..., Sso]) -> None:
    env = sso(refresh=False, ttl={"IdToken": 6})
    browser, answer = env.log_in("victor")
    onward(answer)
    record = wait_for_audit(env, lambda r: r["event"] == "login" and r["outcome"] == "success")
    assert record["session_lifetime"] <= 6 and record["renewable"] is False
    assert api_status(env, browser) == 200
    time.sleep(6.5)
    assert api_status(env, browser) == 401


@pytest.mark.doc_rule("sso-lifetime")
def test_the_session_is_renewed_with_the_refresh_token_and_ends_when_that_is_refused(
        sso: Callable[..., Sso]) -> None:
    env = sso(ttl={"IdToken": 6})
    browser, answer = env.log_in("olga")
    onward(answer)
    started = time.monotonic()
    while time.monotonic() - started < 14:  # well past two ID token lifetimes
        assert api_status(env, browser) == 200
        time.sleep(1)
    renewals = [r for r in env.audit("session_renewal") if r["outcome"] == "success"]
    assert len(renewals) >= 2 and renewals[0]["principal"] == "olga" and renewals[0]["issuer"] == "corp"

    # The IdP stops honouring the refresh token (the client loses the grant): the next renewal
    # is refused and the session ends then, before its ID token would have.
    env.idps["corp"].set_client(OidcClient(CLIENT, redirect_uris=(f"{env.server.url}/login/oidc/corp/callback",),
                                           grant_types=("authorization_code",)))
    deadline = time.monotonic() + 10
    while api_status(env, browser) == 200:
        assert time.monotonic() < deadline, "the session outlived its ID token"
        time.sleep(0.5)
    assert api_status(env, browser) == 401
    refused = wait_for_audit(env, lambda r: r["event"] == "session_renewal" and r["outcome"] == "refused")
    assert refused["principal"] == "olga" and refused["reason"] == "malformed"
    no_token_anywhere(env)


@pytest.mark.doc_rule("sso-lifetime")
def test_an_unreachable_idp_keeps_the_session_until_its_id_token_expires(sso: Callable[..., Sso]) -> None:
    env = sso(ttl={"IdToken": 6})
    browser, answer = env.log_in("victor")
    onward(answer)
    logged_in = time.monotonic()
    env.idps["corp"].stop()  # renewals cannot reach it: not a refusal, so the session lives on
    while time.monotonic() - logged_in < 5:
        assert api_status(env, browser) == 200
        time.sleep(0.5)
    time.sleep(max(0.0, 6.5 - (time.monotonic() - logged_in)))
    assert api_status(env, browser) == 401
    assert "Cannot renew the session of 'victor' at issuer corp" in env.server.log()
    assert not [r for r in env.audit("session_renewal") if r["outcome"] == "refused"]


@pytest.mark.doc_rule("sso-logout")
def test_rp_initiated_logout_ends_both_sessions(sso: Callable[..., Sso]) -> None:
    env = sso()
    idp = env.idps["corp"]
    browser, answer = env.log_in("alice")
    onward(answer)
    logout = browser.post(f"{env.server.url}/logout", data={"csrf_token": csrf_token(env, browser)},
                          headers={"Origin": env.server.url}, allow_redirects=False, timeout=10)
    end_session = onward(logout)
    assert end_session.startswith(idp.discovery()["end_session_endpoint"] + "?")
    params = callback_params(end_session)
    assert params["post_logout_redirect_uri"] == f"{env.server.url}/login" and params["client_id"] == CLIENT
    assert jwt_parts(params["id_token_hint"])[1]["sub"] == "alice"
    assert api_status(env, browser) == 401  # ours ended already
    assert idp.logout(browser, end_session) == f"{env.server.url}/login"
    # The IdP's session ended too: a new login asks for the password again.
    authorize = env.start(browser)
    url = authorize
    for _ in range(5):
        hop = browser.get(url, allow_redirects=False, verify=str(idp.ca_file), timeout=10)
        if not hop.is_redirect:
            break
        url = requests.compat.urljoin(url, hop.headers["location"])
    assert 'id="login-form"' in hop.text
    record = wait_for_audit(env, lambda r: r["event"] == "logout" and r.get("via") == "rp_initiated")
    assert record["principal"] == "alice" and record["issuer"] == "corp" and record["subject"] == "alice"
    no_token_anywhere(env)


@pytest.mark.doc_rule("sso-logout")
def test_back_channel_logout_from_the_idp_ends_that_session(sso: Callable[..., Sso]) -> None:
    env = sso()
    idp = env.idps["corp"]
    alice, answer = env.log_in("alice")
    onward(answer)
    olga, answer = env.log_in("olga")
    onward(answer)
    # Alice signs out at the IdP itself (another application's logout, the IdP's own page).
    end = idp.discovery()["end_session_endpoint"]
    idp.logout(alice, end)
    assert "back-channel logout delivered to luigi-appliance" in idp.log()
    assert api_status(env, alice) == 401
    assert api_status(env, olga) == 200
    record = wait_for_audit(env, lambda r: r["event"] == "logout" and r.get("via") == "backchannel")
    assert record["principal"] == "alice" and record["subject"] == "alice" and record["sessions"] == 1

    url = f"{env.server.url}/login/oidc/corp/backchannel-logout"
    plain = requests.Session()
    plain.trust_env = False
    plain.verify = str(env.server.ca_file)
    # Refused: no token, not a JWT, and one signed by the IdP's key for another audience.
    now = int(time.time())
    event = {"http://schemas.openid.net/event/backchannel-logout": {}}
    forged = idp.sign_jwt({"iss": idp.issuer, "aud": "someone-else", "sub": "olga", "iat": now, "exp": now + 120,
                           "jti": "j1", "events": event}, header={"typ": "logout+jwt"})
    for form in ({}, {"logout_token": "not-a-jwt"}, {"logout_token": forged}):
        answer = plain.post(url, data=form, timeout=10)
        assert answer.status_code == 400 and "set-cookie" not in answer.headers, form
    assert api_status(env, olga) == 200
    # A real logout token for olga's subject (what an IdP without sid would send) ends hers.
    token = idp.sign_jwt({"iss": idp.issuer, "aud": CLIENT, "sub": "olga", "iat": now, "exp": now + 120,
                          "jti": "j2", "events": event}, header={"typ": "logout+jwt"})
    answer = plain.post(url, data={"logout_token": token}, timeout=10)
    assert answer.status_code == 200 and "set-cookie" not in answer.headers
    assert api_status(env, olga) == 401
    wait_for_audit(env, lambda r: r["event"] == "logout" and r.get("subject") == "olga" and r["outcome"] == "success")
    assert [r["reason"] for r in env.audit("logout") if r["outcome"] == "refused"] == ["malformed"] * 2 + [
        "wrong_audience"]
    no_token_anywhere(env)


def test_two_issuers_each_with_its_button(sso: Callable[..., Sso]) -> None:
    env = sso(names=("corp", "ci"))
    # An issuer that cannot be reached: said on the login page (503), not a traceback.
    env.idps["ci"].stop()
    down = env.browser().get(f"{env.server.url}/login/oidc/ci", allow_redirects=False, timeout=10)
    assert down.status_code == 503 and "ci cannot be reached right now" in down.text
    env.idps["ci"].start()
    page = env.browser().get(f"{env.server.url}/login?next=/history", timeout=10).text
    assert 'id="sso-corp" href="/login/oidc/corp?next=%2Fhistory">Sign in with corp</a>' in page
    assert 'id="sso-ci" href="/login/oidc/ci?next=%2Fhistory">Sign in with ci</a>' in page
    assert 'id="password-login"' in page
    browser, answer = env.log_in("olga", name="ci")
    onward(answer)
    assert api_status(env, browser) == 200
    record = wait_for_audit(env, lambda r: r["event"] == "login" and r["outcome"] == "success")
    assert record["issuer"] == "ci" and record["backend"] == "oidc:ci"
    # corp's answer brought to ci's callback is refused (the flow was started for corp).
    browser = env.browser()
    back = env.idps["corp"].login(browser, env.start(browser, "corp"), "alice")
    misrouted = back.replace("/login/oidc/corp/callback", "/login/oidc/ci/callback")
    assert browser.get(misrouted, allow_redirects=False, timeout=10).status_code == 400
    assert "Traceback" not in env.server.log()


@pytest.mark.doc_rule("password-login-off")
def test_the_password_form_switched_off(sso: Callable[..., Sso], tmp_path: Path) -> None:
    env = sso(extra="[session]\npassword_login = false\n")
    browser = env.browser()
    page = browser.get(f"{env.server.url}/login", timeout=10)
    assert page.status_code == 200 and 'id="sso-corp"' in page.text
    assert 'id="password-login"' not in page.text and 'type="password"' not in page.text
    posted = browser.post(f"{env.server.url}/login", data={"username": "admin", "password": "admin-password-123"},
                          headers={"Origin": env.server.url}, allow_redirects=False, timeout=10)
    assert posted.status_code == 403 and COOKIE_TLS not in posted.headers.get("set-cookie", "")
    assert "switched off" in posted.text and 'type="password"' not in posted.text
    # Programs are not browsers: HTTP Basic still works.
    assert env.server.rpc("is_paused").status_code == 200
    _, answer = env.log_in("victor")
    onward(answer)

    # Without any issuer the setting would leave no way in: refused by the configuration check.
    conf = tmp_path / "no-issuer.conf"
    conf.write_text("[session]\npassword_login = false\n")
    conf.chmod(0o640)
    result = cli("--config", str(conf), "config", "check")
    assert result.returncode == 1 and "password_login" in result.stdout + result.stderr
