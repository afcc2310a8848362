"""Name-and-password authentication (HTTP Basic, the login form, token exchange).

Backends (local users file, LDAP) are asked in the configured order, except that a backend that
knows the name without any I/O (the users file, held in memory) is asked first: the local
break-glass account is checked without waiting for a directory that hangs. The first backend
that knows the name and password wins. If a backend is unavailable (directory down) the next is
still asked; when none succeeds and one was unavailable, the answer is 503, not 401. Each
backend runs in threads of its own, so a hanging directory never holds up the scrypt checks of
local accounts either.

A KDF or a directory round trip per request would cap the scheduler at a few dozen RPC/s, so
successful verifications are cached in memory for ``ttl`` seconds. The cache key is an HMAC of
name and password under a random per-process key: the password itself is never stored, and a
dump of the cache cannot be attacked offline any faster than the scrypt hashes. While the
directory is down, a cached principal keeps working for ``grace`` seconds past its TTL. A reload
(SIGHUP) empties the cache, so a removed user or changed password takes effect at once, and
starts a new account generation (``current``: what bearer tokens are checked against).

Names are checked once here (auth/names.py): one with control characters or surrounding blanks
is refused before any backend sees it; failures of every spelling of a name count together; a
name that is no valid user name appears in the log and the audit only as a keyed hash.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from tornado.httputil import HTTPServerRequest

from luigi_appliance.audit import AuditLog
from luigi_appliance.auth import AccountBackend, AuthUnavailable, LockedOut, Principal
from luigi_appliance.auth.names import NameDisplay, name_problem
from luigi_appliance.auth.outcomes import BASIC, UNCOUNTED, AuthOutcomes, Reason
from luigi_appliance.auth.registry import account_backends, register_scheme
from luigi_appliance.auth.throttle import LoginThrottle

if TYPE_CHECKING:
    from luigi_appliance.config import Settings

log = logging.getLogger(__name__)

MAX_CACHE_ENTRIES = 10_000
# Delay before answering a failed login: doubles per recent failure, until the lockout.
FIRST_FAILURE_DELAY = 0.05
MAX_FAILURE_DELAY = 1.0
# After a backend could not say what an account is now, it is asked again after this long.
RECHECK_DOWN_AFTER = 30.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Cached:
    principal: Principal
    expires: float


class _BackendUnavailable(AuthUnavailable):
    """AuthUnavailable naming the backend that could not answer (for the failure's label)."""

    def __init__(self, backend: str, cause: AuthUnavailable):
        super().__init__(str(cause))
        self.backend = backend


def parse_basic(authorization: str | None) -> tuple[str, str] | None:
    """(name, password) from an ``Authorization: Basic`` header, or None if absent or malformed."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    if not sep or not name:
        return None
    return name, password


def client_address(source: str) -> str | None:
    """The address to throttle by: ``source`` when it is an IP address, None when the client's
    address is unknown (server/client_address.py labels those ``unix`` or ``proxy:...``)."""
    try:
        ipaddress.ip_address(source)
    except ValueError:
        return None
    return source


class BasicAuthenticator:
    """Authenticator for ``Authorization: Basic`` against ordered password verifiers."""

    def __init__(self, verifiers: list[AccountBackend], ttl: float, *, grace: float = 0.0,
                 throttle: LoginThrottle | None = None, audit: AuditLog | None = None, kdf_threads: int = 2,
                 outcomes: AuthOutcomes = UNCOUNTED):
        self._verifiers = verifiers
        # Failures of every password check, successes of the Basic scheme's requests (/metrics).
        self._outcomes = outcomes
        self._ttl = ttl
        self._grace = grace
        self._throttle = throttle
        self._audit = audit
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, _Cached] = {}
        self._names = NameDisplay(lambda name: any(v.check_username(name) for v in verifiers))
        # Bounded: a flood of bad passwords queues here instead of eating every core. One pool per
        # backend: a directory that hangs fills only its own threads.
        self._pools = {id(v): ThreadPoolExecutor(max_workers=kdf_threads, thread_name_prefix=f"auth-{v.backend}")
                       for v in verifiers}
        # Bumped by reload(): what ``current`` said about an account holds until the next one.
        self.generation = 0
        self._current: dict[tuple[str, str], Principal | None] = {}
        self._down: dict[tuple[str, str], float] = {}
        self._pending: dict[tuple[int, str, str], asyncio.Future[Principal | None]] = {}

    @property
    def throttle(self) -> LoginThrottle | None:
        """The failed-login throttle (server/unlock.py lifts a name's lockout through it)."""
        return self._throttle

    def _cache_key(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, name.encode() + b"\0" + password.encode(), hashlib.sha256).digest()

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is None:
            return None
        principal = await self.check(creds[0], creds[1], request.remote_ip or "")
        if principal is not None:
            self._outcomes.auth_succeeded(principal.backend)
        return principal

    async def check(self, name: str, password: str, remote_ip: str) -> Principal | None:
        """The principal for a name and password (from Basic, the login form or /auth/token).

        ``remote_ip`` is the client's address as the guard resolved it (a label such as ``unix``
        when it is unknown). Raises LockedOut (429) after repeated failures and AuthUnavailable
        (503) when a backend that might know the name is down and no cached principal can stand
        in; such outages count as failures of the name, so nobody can hammer a hanging directory.
        """
        key = self._cache_key(name, password)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit.expires > now:
            return hit.principal
        shown = self._names.shown(name)
        address = client_address(remote_ip)
        if self._throttle is not None:
            wait = self._throttle.locked(name, address, now)
            if wait > 0:
                self._record(shown, remote_ip, "locked_out")
                self._outcomes.auth_failed(BASIC, Reason.LOCKED_OUT)
                raise LockedOut(wait)
        if name_problem(name) is not None:
            await self._failed(name, shown, remote_ip, address)
            return None
        try:
            principal = await self._verify(name, password)
        except _BackendUnavailable as exc:
            if hit is not None and hit.expires + self._grace > now:
                log.warning("Directory unavailable: accepting the cached login of %r (grace period)", shown)
                return hit.principal
            self._record(shown, remote_ip, "unavailable")
            self._outcomes.auth_failed(exc.backend, Reason.UNAVAILABLE)
            # Counted against the name only: the outage is not the address's fault.
            if self._throttle is not None and self._throttle.failed(name, None) == 0:
                log.warning("Locking out user %r for %.0fs after repeated logins while a backend was unavailable",
                            shown, self._throttle.lockout)
            raise
        if principal is None:
            await self._failed(name, shown, remote_ip, address)
            return None
        if self._throttle is not None:
            self._throttle.succeeded(name)
        self._record(principal.name, remote_ip, "success", backend=principal.backend, role=str(principal.role))
        if self._ttl > 0:
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._expire(now)
            self._cache[key] = _Cached(principal, now + self._ttl)
        return principal

    def _ordered(self, name: str) -> list[AccountBackend]:
        """The configured order, with the backends that know the name in memory first."""
        first = [v for v in self._verifiers if v.knows(name)]
        return first + [v for v in self._verifiers if v not in first]

    async def _run(self, verifier: AccountBackend, call: Callable[..., _T], *args: str) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pools[id(verifier)], call, *args)

    async def _verify(self, name: str, password: str) -> Principal | None:
        unavailable: _BackendUnavailable | None = None
        for verifier in self._ordered(name):
            try:
                principal = await self._run(verifier, verifier.verify, name, password)
            except AuthUnavailable as exc:
                unavailable = _BackendUnavailable(verifier.backend, exc)
                continue
            if principal is not None:
                return principal
        if unavailable is not None:
            raise unavailable
        return None

    async def current(self, backend: str, name: str) -> Principal | None:
        """The principal account ``name`` of ``backend`` has now; None when it no longer exists
        or has no role (or the backend is not configured any more).

        Asked once per account per generation (a reload starts a new one); concurrent askers
        share one lookup. Raises AuthUnavailable when the backend cannot say; then it is not
        asked again for RECHECK_DOWN_AFTER seconds.
        """
        account = (backend, name)
        if account in self._current:
            return self._current[account]
        if self._down.get(account, 0.0) > time.monotonic():
            raise AuthUnavailable(f"the {backend} backend could not be asked about {name!r} recently")
        generation = self.generation
        pending = self._pending.get((generation, backend, name))
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._pending[(generation, backend, name)] = future
        try:
            principal = await self._lookup(backend, name)
        except AuthUnavailable:
            if generation == self.generation:
                self._down[account] = time.monotonic() + RECHECK_DOWN_AFTER
            raise
        else:
            if generation == self.generation:  # a reload in between makes the answer stale
                self._current[account] = principal
                self._down.pop(account, None)
            future.set_result(principal)
            return principal
        finally:
            del self._pending[(generation, backend, name)]
            if not future.done():
                # Whoever shares this lookup fails like it (AuthUnavailable: 503).
                future.set_exception(AuthUnavailable(f"the {backend} backend could not be asked about {name!r}"))
                future.exception()  # retrieved: no "never retrieved" warning when nobody else waits

    async def _lookup(self, backend: str, name: str) -> Principal | None:
        verifier = next((v for v in self._verifiers if v.backend == backend), None)
        if verifier is None:
            return None
        return await self._run(verifier, verifier.principal, name)

    async def _failed(self, name: str, shown: str, remote_ip: str, address: str | None) -> None:
        log.warning("Authentication failed for user %r from %s", shown, remote_ip)
        self._outcomes.auth_failed(BASIC, Reason.BAD_CREDENTIALS)
        if self._throttle is None:
            self._record(shown, remote_ip, "failure")
            return
        recent = self._throttle.failed(name, address)
        self._record(shown, remote_ip, "locked_out" if recent == 0 else "failure")
        if recent == 0:
            log.warning("Locking out user %r%s for %.0fs after repeated failed logins", shown,
                        f" and address {address}" if address else "", self._throttle.lockout)
        else:
            await asyncio.sleep(min(MAX_FAILURE_DELAY, FIRST_FAILURE_DELAY * 2 ** (recent - 1)))

    def _record(self, name: str, remote_ip: str, outcome: str, **fields: str) -> None:
        if self._audit is not None:
            self._audit.record("login", principal=name, source=remote_ip, outcome=outcome, **fields)

    def _expire(self, now: float) -> None:
        for key in [k for k, c in self._cache.items() if c.expires + self._grace <= now]:
            del self._cache[key]
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            self._cache.clear()

    def reload(self) -> None:
        for verifier in self._verifiers:
            verifier.reload()
        self._cache.clear()
        self.generation += 1
        self._current.clear()
        self._down.clear()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


def password_authenticator(settings: Settings, audit: AuditLog | None,
                           outcomes: AuthOutcomes = UNCOUNTED) -> BasicAuthenticator:
    """Names and passwords, checked by the [auth] backends in their configured order."""
    auth = settings.auth
    throttle = LoginThrottle(auth.failure_limit, auth.failure_window, auth.lockout)
    return BasicAuthenticator(account_backends(settings), ttl=auth.cache_ttl, grace=settings.ldap.outage_grace,
                              throttle=throttle, audit=audit, outcomes=outcomes)


# The Basic scheme is the shared password check itself (built once, by password_authenticator).
register_scheme("basic", lambda context: context.accounts)
