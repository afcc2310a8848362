"""HTTP Basic authentication with a cache of verified credentials.

A KDF run per request would cap the scheduler at a few dozen RPC/s, so successful verifications
are cached in memory for ``ttl`` seconds. The cache key is an HMAC of name and password under a
random per-process key: the password itself is never stored, and a dump of the cache cannot be
attacked offline any faster than the scrypt hashes. A reload (SIGHUP) empties the cache, so a
removed user or changed password takes effect at once.
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
from typing import Protocol

from tornado.httputil import HTTPServerRequest

from luigi_appliance.auth import Principal

log = logging.getLogger(__name__)

MAX_CACHE_ENTRIES = 10_000


class PasswordVerifier(Protocol):
    backend: str

    def verify(self, name: str, password: str) -> Principal | None: ...

    def reload(self) -> None: ...


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
    """Authenticator for ``Authorization: Basic`` against a password verifier."""

    def __init__(self, verifier: PasswordVerifier, ttl: float, kdf_threads: int = 2):
        self._verifier = verifier
        self._ttl = ttl
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[Principal, float]] = {}
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
        """The principal for a name and password (from Basic, the login form or /auth/token)."""
        key = self._cache_key(name, password)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = await asyncio.get_running_loop().run_in_executor(self._pool, self._verifier.verify, name, password)
        if principal is None:
            log.warning("Authentication failed for user %r", name)
            return None
        if self._ttl > 0:
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._expire(now)
            self._cache[key] = (principal, now + self._ttl)
        return principal

    def _expire(self, now: float) -> None:
        for key in [k for k, (_, exp) in self._cache.items() if exp <= now]:
            del self._cache[key]
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            self._cache.clear()

    def reload(self) -> None:
        self._verifier.reload()
        self._cache.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
