"""What the password check and the session scheme report to /metrics, in-process: each outcome
counted once, under its backend and reason class. (Bearer tokens, lockouts through HTTP and the
scrape itself are in tests/system/test_metrics.py; a real directory outage in test_ldap.py.)"""

from __future__ import annotations

import asyncio
import base64

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from luigi_appliance.auth import AuthUnavailable, CsrfRefused, LockedOut, Principal, Role
from luigi_appliance.auth.basic import BasicAuthenticator
from luigi_appliance.auth.session import COOKIE_TLS, CSRF_HEADER, SessionAuthenticator
from luigi_appliance.auth.throttle import LoginThrottle
from luigi_appliance.metrics.registry import SchedulerMetrics


class _Directory:
    """An in-memory account backend that can be down: a directory outage stands in here for the
    real one (slapd stopped) of test_ldap.py, so that each outcome is counted in milliseconds."""

    backend = "memory"

    def __init__(self) -> None:
        self.down = False

    def verify(self, name: str, password: str) -> Principal | None:
        if self.down:
            raise AuthUnavailable("directory down")
        return Principal(name, Role.WORKER, self.backend) if password == f"{name}-password" else None

    def principal(self, name: str) -> Principal | None:
        return Principal(name, Role.WORKER, self.backend)

    def knows(self, name: str) -> bool:
        return False

    def check_username(self, name: str) -> bool:
        return name.isalnum()

    def reload(self) -> None:
        pass


def failures(metrics: SchedulerMetrics, backend: str, reason: str) -> float | None:
    return metrics.registry.get_sample_value("luigi_appliance_auth_failures_total",
                                             {"backend": backend, "reason": reason})


def successes(metrics: SchedulerMetrics, backend: str) -> float | None:
    return metrics.registry.get_sample_value("luigi_appliance_auth_successes_total", {"backend": backend})


def request(method: str = "GET", **headers: str) -> HTTPServerRequest:
    return HTTPServerRequest(start_line=RequestStartLine(method, "/api/task_list", "HTTP/1.1"),
                             headers=HTTPHeaders({"Host": "scheduler", **headers}))


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def test_password_check_outcomes_by_backend_and_reason() -> None:
    metrics = SchedulerMetrics()
    directory = _Directory()
    auth = BasicAuthenticator([directory], ttl=300, throttle=LoginThrottle(2, 60, 60), outcomes=metrics)

    async def scenario() -> None:
        for _ in range(2):  # the cache answers the second: still one authenticated request each
            assert await auth.authenticate(request(Authorization=basic("ivan", "ivan-password"))) is not None
        assert await auth.check("ivan", "wrong", "192.0.2.1") is None
        assert await auth.check("bad\nname", "x", "192.0.2.1") is None  # locks the address (2 failures)
        with pytest.raises(LockedOut):
            await auth.check("judy", "judy-password", "192.0.2.1")
        directory.down = True
        with pytest.raises(AuthUnavailable):
            await auth.check("judy", "judy-password", "198.51.100.7")

    try:
        asyncio.run(scenario())
    finally:
        auth.close()
    assert successes(metrics, "memory") == 2
    assert failures(metrics, "basic", "bad_credentials") == 2
    assert failures(metrics, "basic", "locked_out") == 1
    assert failures(metrics, "memory", "unavailable") == 1


def test_session_outcomes() -> None:
    metrics = SchedulerMetrics()
    sessions = SessionAuthenticator(60, 3600, BasicAuthenticator([], ttl=0), secure=True, outcomes=metrics)
    session_id, session = sessions.start(Principal("kim", Role.VIEWER, "local"), None)
    cookie = f"{COOKIE_TLS}={session_id}"

    async def scenario() -> None:
        assert await sessions.authenticate(request()) is None  # no cookie: not this scheme's, not counted
        assert await sessions.authenticate(request(Cookie=f"{COOKIE_TLS}={'B' * 43}")) is None
        assert (await sessions.authenticate(request(Cookie=cookie))).name == "kim"
        assert await sessions.authenticate(request("POST", Cookie=cookie, **{CSRF_HEADER: session.csrf_token}))
        with pytest.raises(CsrfRefused):
            await sessions.authenticate(request("POST", Cookie=cookie))

    asyncio.run(scenario())
    assert successes(metrics, "local") == 1  # the login
    assert successes(metrics, "session") == 2
    assert failures(metrics, "session", "invalid_session") == 1
    assert failures(metrics, "session", "csrf") == 1
