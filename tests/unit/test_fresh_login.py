"""Who has "just proved who they are" for an approval decision (server/fresh_login.py): an
allowlist, so a credential scheme added later is not fresh until it is said to be."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest

from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.session import SessionAuthenticator
from luigi_appliance.server.fresh_login import SETTING, fresh_refusal

WINDOW = 900.0


@dataclass
class Guard:
    authenticators: list[Any]


@dataclass
class Application:
    settings: dict[str, Any] = field(default_factory=lambda: {SETTING: WINDOW})


@dataclass
class Handler:
    """What fresh_refusal reads of a guarded handler."""

    guard: Guard
    request: HTTPServerRequest
    application: Application = field(default_factory=Application)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def handler(sessions: SessionAuthenticator | None, cookie: str | None = None) -> Handler:
    headers = HTTPHeaders({"Cookie": cookie} if cookie else {})
    return Handler(Guard([sessions] if sessions else []), HTTPServerRequest(method="POST", uri="/", headers=headers))


@pytest.mark.parametrize(("backend", "fresh"), [
    ("local", True), ("ldap", True),  # HTTP Basic: the password was checked for this request
    ("token:local", False), ("token:oidc:corp", False), ("certificate", False),
    ("oidc:corp", False),  # an IdP identity without its browser session
    ("kerberos", False),  # a scheme this module does not know: not fresh
])
def test_only_a_password_in_the_request_is_fresh_without_a_session(backend: str, fresh: bool) -> None:
    refusal = fresh_refusal(handler(None), Principal("alice", Role.OPERATOR, backend))
    assert (refusal is None) == fresh, refusal
    if not fresh:
        assert refusal is not None and refusal.startswith("this decision needs a fresh login")


def test_a_browser_session_is_fresh_until_the_window_ends() -> None:
    clock = Clock()
    sessions = SessionAuthenticator(3600, 86400, passwords=None, secure=True)  # type: ignore[arg-type]
    sessions.store._clock = clock
    principal = Principal("alice", Role.VIEWER, "oidc:corp")
    session_id, _ = sessions.store.create(principal)
    cookie = f"{sessions.cookie_name}={session_id}"
    assert fresh_refusal(handler(sessions, cookie), principal) is None
    clock.now += WINDOW + 1
    refusal = fresh_refusal(handler(sessions, cookie), principal)
    assert refusal is not None and "signed in 15 minutes ago" in refusal
    # Another principal than the session's (HTTP Basic beside someone's cookie) is judged alone.
    assert fresh_refusal(handler(sessions, cookie), Principal("bob", Role.VIEWER, "local")) is None
    assert fresh_refusal(handler(sessions, cookie), Principal("bob", Role.VIEWER, "token:local")) is not None
