"""Name-and-password authentication (HTTP Basic, the login form, token exchange).

Backends (local users file, LDAP) are asked in the configured order; the first that knows the
name and password wins. If a backend is unavailable (directory down) the next is still asked, so
a local break-glass account keeps working; when none succeeds and one was unavailable, the
answer is 503, not 401.

A KDF or a directory round trip per request would cap the scheduler at a few dozen RPC/s, so
successful verifications are cached in memory for ``ttl`` seconds. The cache key is an HMAC of
name and password under a random per-process key: the password itself is never stored, and a
dump of the cache cannot be attacked offline any faster than the scrypt hashes. While the
directory is down, a cached principal keeps working for ``grace`` seconds past its TTL. A reload
(SIGHUP) empties the cache, so a removed user or changed password takes effect at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from tornado.httputil import HTTPServerRequest

from luigi_appliance.audit import AuditLog
from luigi_appliance.auth import AuthUnavailable, LockedOut, Principal
from luigi_appliance.auth.throttle import LoginThrottle

log = logging.getLogger(__name__)

MAX_CACHE_ENTRIES = 10_000
# Delay before answering a failed login: doubles per recent failure, until the lockout.
FIRST_FAILURE_DELAY = 0.05
MAX_FAILURE_DELAY = 1.0


class PasswordVerifier(Protocol):
    backend: str

    def verify(self, name: str, password: str) -> Principal | None: ...

    def reload(self) -> None: ...


@dataclass(frozen=True)
class _Cached:
    principal: Principal
    expires: float


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


class BasicAuthenticator:
    """Authenticator for ``Authorization: Basic`` against ordered password verifiers."""

    def __init__(self, verifiers: list[PasswordVerifier], ttl: float, *, grace: float = 0.0,
                 throttle: LoginThrottle | None = None, audit: AuditLog | None = None, kdf_threads: int = 2):
        self._verifiers = verifiers
        self._ttl = ttl
        self._grace = grace
        self._throttle = throttle
        self._audit = audit
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, _Cached] = {}
        # Bounded: a flood of bad passwords queues here instead of eating every core.
        self._pool = ThreadPoolExecutor(max_workers=kdf_threads, thread_name_prefix="kdf")

    def _cache_key(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, name.encode() + b"\0" + password.encode(), hashlib.sha256).digest()

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is None:
            return None
        return await self.check(creds[0], creds[1], request.remote_ip or "")

    async def check(self, name: str, password: str, remote_ip: str) -> Principal | None:
        """The principal for a name and password (from Basic, the login form or /auth/token).

        Raises LockedOut (429) after repeated failures and AuthUnavailable (503) when a backend
        that might know the name is down and no cached principal can stand in.
        """
        key = self._cache_key(name, password)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit.expires > now:
            return hit.principal
        if self._throttle is not None:
            wait = self._throttle.locked(name, remote_ip, now)
            if wait > 0:
                self._record(name, remote_ip, "locked_out")
                raise LockedOut(wait)
        try:
            principal = await asyncio.get_running_loop().run_in_executor(self._pool, self._verify, name, password)
        except AuthUnavailable:
            if hit is not None and hit.expires + self._grace > now:
                log.warning("Directory unavailable: accepting the cached login of %r (grace period)", name)
                return hit.principal
            self._record(name, remote_ip, "unavailable")
            raise
        if principal is None:
            await self._failed(name, remote_ip)
            return None
        if self._throttle is not None:
            self._throttle.succeeded(name, remote_ip)
        self._record(name, remote_ip, "success", backend=principal.backend, role=str(principal.role))
        if self._ttl > 0:
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._expire(now)
            self._cache[key] = _Cached(principal, now + self._ttl)
        return principal

    def _verify(self, name: str, password: str) -> Principal | None:
        unavailable: AuthUnavailable | None = None
        for verifier in self._verifiers:
            try:
                principal = verifier.verify(name, password)
            except AuthUnavailable as exc:
                unavailable = exc
                continue
            if principal is not None:
                return principal
        if unavailable is not None:
            raise unavailable
        return None

    async def _failed(self, name: str, remote_ip: str) -> None:
        shown = name if len(name) <= 64 else name[:64] + "..."
        log.warning("Authentication failed for user %r from %s", shown, remote_ip)
        if self._throttle is None:
            self._record(name, remote_ip, "failure")
            return
        recent = self._throttle.failed(name, remote_ip)
        self._record(name, remote_ip, "locked_out" if recent == 0 else "failure")
        if recent == 0:
            log.warning("Locking out user %r and address %s for %.0fs after repeated failed logins",
                        shown, remote_ip, self._throttle.lockout)
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

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
