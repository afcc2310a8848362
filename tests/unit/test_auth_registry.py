"""The auth seams: backends and schemes chosen by name, auth errors answered by the guard only."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from luigi_appliance.auth import AuthUnavailable, CsrfRefused, LockedOut, Principal, Role, registry
from luigi_appliance.auth.basic import BasicAuthenticator
from luigi_appliance.auth.bearer import BearerAuthenticator
from luigi_appliance.auth.local import LocalVerifier
from luigi_appliance.auth.session import COOKIE_PLAIN, CSRF_HEADER, SessionAuthenticator
from luigi_appliance.errors import ApplianceError
from luigi_appliance.server.guard import auth_refusal


class _Backend:
    def __init__(self, name: str):
        self.backend = name


def test_backends_are_built_by_name_in_the_configured_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_backends", {})
    registry.register_backend("first", lambda settings: _Backend("first"))
    registry.register_backend("second", lambda settings: _Backend("second"))
    settings = SimpleNamespace(auth=SimpleNamespace(backends=("second", "first")))
    assert [b.backend for b in registry.account_backends(settings)] == ["second", "first"]  # type: ignore[arg-type]


def test_the_local_backend_is_its_module_s_registration(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("")
    users.chmod(0o600)
    auth = SimpleNamespace(backends=("local",), users_file=users)
    [backend] = registry.account_backends(SimpleNamespace(auth=auth))  # type: ignore[arg-type]
    assert isinstance(backend, LocalVerifier)


@pytest.mark.parametrize("name", ["kerberos", "no-such-backend", "basic"])
def test_an_unknown_backend_is_refused_by_name(name: str) -> None:
    with pytest.raises(ApplianceError, match=f"no account backend named '{name}'"):
        registry.account_backend(name, SimpleNamespace())  # type: ignore[arg-type]


def test_the_schemes_are_asked_session_then_bearer_then_basic(tmp_path: Path) -> None:
    accounts = BasicAuthenticator([], ttl=0)
    settings = SimpleNamespace(session=SimpleNamespace(idle_timeout=60, absolute_timeout=600, password_login=True),
                               tokens=SimpleNamespace(keys_file=tmp_path / "token.keys", ttl=60),
                               state=SimpleNamespace(dir=tmp_path), ldap=SimpleNamespace(outage_grace=0))
    try:
        schemes = registry.credential_schemes(registry.SchemeContext(settings, accounts, secure=False))  # type: ignore[arg-type]
        assert list(schemes) == ["session", "bearer", "basic"]
        assert isinstance(schemes["session"], SessionAuthenticator)
        assert isinstance(schemes["bearer"], BearerAuthenticator) and schemes["bearer"].accounts is accounts
        assert schemes["basic"] is accounts  # one throttled, cached password check for every scheme
        assert registry.scheme_of(schemes.values(), SessionAuthenticator) is schemes["session"]
    finally:
        accounts.close()


def test_a_session_without_its_csrf_token_raises_an_auth_error() -> None:
    sessions = SessionAuthenticator(60, 600, BasicAuthenticator([], ttl=0), secure=False)
    session_id, session = sessions.start(Principal("alice", Role.OPERATOR, "local"), None)

    def request(method: str, **headers: str) -> HTTPServerRequest:
        return HTTPServerRequest(start_line=RequestStartLine(method, "/api/pause", "HTTP/1.1"),
                                 headers=HTTPHeaders({"Host": "scheduler", "Cookie": f"{COOKIE_PLAIN}={session_id}",
                                                      **headers}))

    assert asyncio.run(sessions.authenticate(request("GET"))) == session.principal
    with pytest.raises(CsrfRefused):
        asyncio.run(sessions.authenticate(request("POST")))
    token = {CSRF_HEADER: session.csrf_token}
    assert asyncio.run(sessions.authenticate(request("POST", **token))) == session.principal


def test_the_guard_turns_auth_errors_into_http_answers() -> None:
    locked = auth_refusal(LockedOut(9.5))
    assert (locked.status, locked.headers) == (429, {"Retry-After": "10"})
    assert auth_refusal(CsrfRefused("CSRF token missing or wrong")).status == 403
    assert auth_refusal(AuthUnavailable("directory down")).status == 503
