"""Pure logic of the auth layer, in-process: throttle and lockout, the credential cache, worker
bindings, and which browser requests count as cross-site. The same rules are exercised against
real backends and real schedulers in tests/system/; these run in milliseconds."""

from __future__ import annotations

import asyncio

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from luigi_appliance.auth import AuthUnavailable, LockedOut, Principal, Role
from luigi_appliance.auth.basic import BasicAuthenticator
from luigi_appliance.auth.throttle import LoginThrottle
from luigi_appliance.server.guard import cross_site
from luigi_appliance.server.worker_bindings import WorkerBindings


def test_lockout_after_the_limit_per_name_and_per_address_until_it_expires() -> None:
    throttle = LoginThrottle(limit=3, window=60, lockout=300)
    assert throttle.failed("alice", "192.0.2.1", now=0) == 1
    assert throttle.failed("ALICE", "192.0.2.2", now=1) == 2  # the same name, folded, from elsewhere
    assert throttle.failed("alice", "192.0.2.1", now=2) == 0  # third failure of the name: locked
    assert throttle.locked("Alice", "198.51.100.9", now=3) == pytest.approx(299)
    assert throttle.locked("bob", "192.0.2.1", now=3) == 0  # the address has 2 failures, not 3
    assert throttle.locked("alice", None, now=303) == 0


def test_failures_outside_the_window_are_forgotten_and_success_clears_only_the_name() -> None:
    throttle = LoginThrottle(limit=3, window=10, lockout=300)
    throttle.failed("carol", "192.0.2.1", now=0)
    throttle.failed("carol", "192.0.2.1", now=1)
    assert throttle.failed("carol", "192.0.2.1", now=20) == 1  # the first two fell out of the window
    throttle.failed("dave", "192.0.2.1", now=21)
    throttle.succeeded("carol")
    assert throttle.failed("carol", "198.51.100.7", now=22) == 1  # the name's count started again
    assert throttle.failed("erin", "192.0.2.1", now=23) == 0  # the address kept its count: locked


def test_without_an_address_only_the_name_is_counted() -> None:
    throttle = LoginThrottle(limit=2, window=60, lockout=60)
    throttle.failed("frank", None, now=0)
    throttle.failed("grace", None, now=0)
    assert throttle.locked("heidi", None, now=1) == 0  # nobody shares an address key


class _Accounts:
    """An in-memory account backend: the cache's logic is under test, not a backend's."""

    backend = "memory"

    def __init__(self) -> None:
        self.verified = 0
        self.down = False

    def verify(self, name: str, password: str) -> Principal | None:
        self.verified += 1
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


def test_the_cache_answers_repeated_logins_and_a_reload_empties_it() -> None:
    accounts = _Accounts()
    auth = BasicAuthenticator([accounts], ttl=300, throttle=LoginThrottle(5, 60, 60))

    async def scenario() -> None:
        for _ in range(3):
            assert (await auth.check("ivan", "ivan-password", "192.0.2.1")).name == "ivan"
        assert accounts.verified == 1
        assert await auth.check("ivan", "wrong", "192.0.2.1") is None  # a wrong password is never cached
        assert accounts.verified == 2
        auth.reload()
        await auth.check("ivan", "ivan-password", "192.0.2.1")
        assert accounts.verified == 3

    try:
        asyncio.run(scenario())
    finally:
        auth.close()


def test_an_outage_keeps_cached_logins_for_the_grace_period_only_and_counts_against_the_name() -> None:
    accounts = _Accounts()
    auth = BasicAuthenticator([accounts], ttl=0.01, grace=3600, throttle=LoginThrottle(2, 60, 60))

    async def scenario() -> None:
        assert await auth.check("judy", "judy-password", "192.0.2.1") is not None
        await asyncio.sleep(0.02)  # past the TTL, within the grace
        accounts.down = True
        assert (await auth.check("judy", "judy-password", "192.0.2.1")).name == "judy"
        with pytest.raises(AuthUnavailable):
            await auth.check("mallory", "guess-1", "192.0.2.1")
        with pytest.raises(AuthUnavailable):
            await auth.check("mallory", "guess-2", "192.0.2.1")
        with pytest.raises(LockedOut):
            await auth.check("mallory", "guess-3", "192.0.2.1")

    try:
        asyncio.run(scenario())
    finally:
        auth.close()


def test_bindings_belong_to_the_first_claimant_and_are_capped_per_principal() -> None:
    live = {"w1", "w2"}
    bindings = WorkerBindings(lambda worker_id: worker_id in live, per_principal=2, total=10)
    assert bindings.claim("w1", "etl") is None
    assert bindings.claim("w1", "other") == "worker id belongs to another principal"
    assert bindings.claim("w2", "etl") is None
    refusal = bindings.claim("w3", "etl")
    assert refusal is not None and "limit per principal" in refusal  # both of its workers are live
    live.discard("w1")
    assert bindings.claim("w3", "etl") is None  # the dead worker's binding made room
    assert bindings.owner("w1") is None and bindings.owner("w2") == "etl"
    assert bindings.release("w2") == "etl" and bindings.claim("w2", "other") is None


def test_a_snapshot_round_trip_keeps_every_binding() -> None:
    bindings = WorkerBindings()
    bindings.claim("w1", "etl")
    bindings.claim("w2", "reports")
    restored = WorkerBindings()
    restored.load(bindings.export())
    assert restored.export() == {"w1": "etl", "w2": "reports"}
    assert restored.claim("w1", "reports") == "worker id belongs to another principal"


def _request(**headers: str) -> HTTPServerRequest:
    return HTTPServerRequest(start_line=RequestStartLine("POST", "/api/pause", "HTTP/1.1"),
                             headers=HTTPHeaders({"Host": "sched.example:8082", **headers}))


@pytest.mark.parametrize(("headers", "refused"), [
    ({}, False),  # no Origin: not a browser (luigi workers, curl)
    ({"Origin": "http://sched.example:8082"}, False),
    ({"Origin": "http://sched.example:8443"}, True),  # another port is the same site, not origin
    ({"Origin": "https://sched.example:8082"}, True),  # another scheme
    ({"Origin": "http://evil.example"}, True),
    ({"Sec-Fetch-Site": "cross-site"}, True),
    ({"Sec-Fetch-Site": "same-site", "Origin": "http://sched.example:8082"}, True),
    ({"Origin": "null"}, True),
    ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, False),  # our own form under no-referrer
])
def test_which_requests_count_as_cross_site(headers: dict[str, str], refused: bool) -> None:
    assert cross_site(_request(**headers)) is refused
