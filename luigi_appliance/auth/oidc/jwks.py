"""An issuer's signing keys (its JWKS), cached, with rotation.

The key set is fetched on first use and again once ``ttl`` has passed, so a key the issuer stops
publishing stops verifying. A token naming a kid the cached set does not have refetches the set
once (the issuer rotated its keys), but at most once per ``refetch_interval``: a stream of tokens
with made-up kids cannot make the scheduler hammer the issuer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from luigi_appliance.auth.oidc import Refusal, TokenRefused

# The key type each algorithm family needs: an algorithm is never used with a key of another type.
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


@dataclass(frozen=True)
class SigningKey:
    kid: str | None
    kty: str
    alg: str | None  # the JWK's own alg, when it states one
    crv: str | None
    key: jwt.PyJWK

    def fits(self, alg: str) -> bool:
        """This key may verify an ``alg`` signature: the key type of the algorithm, the curve of
        an ECDSA one, and the JWK's own alg when it states one."""
        if KEY_TYPES.get(alg[:2]) != self.kty or (self.alg is not None and self.alg != alg):
            return False
        return alg not in _CURVES or self.crv == _CURVES[alg]


def signing_keys(document: Any) -> tuple[SigningKey, ...]:
    """The usable signature keys of a JWKS document (encryption keys and unknown types left out)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS: no list of keys")
    keys = []
    for data in document["keys"]:
        usable = isinstance(data, Mapping) and data.get("use", "sig") == "sig" and data.get("kty") in KEY_TYPES.values()
        if not usable:
            continue
        try:
            key = jwt.PyJWK(dict(data))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue  # a key this library cannot use verifies nothing
        kid = data.get("kid")
        keys.append(SigningKey(kid if isinstance(kid, str) else None, data["kty"], data.get("alg"), data.get("crv"),
                               key))
    return tuple(keys)


class KeyCache:
    """The JWKS of one issuer; ``fetch`` returns the document (TokenRefused when unavailable)."""

    def __init__(self, fetch: Callable[[], Awaitable[Any]], ttl: float, refetch_interval: float,
                 clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._ttl = ttl
        self._refetch_interval = refetch_interval
        self._clock = clock
        self._keys: tuple[SigningKey, ...] | None = None
        self._fetched = 0.0
        self._last_refetch: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # for `oidc test` and the tests: how often the issuer was asked

    async def keys(self) -> tuple[SigningKey, ...]:
        """The current key set (fetched when absent or older than the ttl)."""
        async with self._lock:
            if self._keys is None or self._clock() - self._fetched >= self._ttl:
                await self._refresh()
            assert self._keys is not None
            return self._keys

    async def key(self, kid: str | None, alg: str) -> SigningKey:
        """The key ``kid`` (a token without kid: the only key that fits ``alg``), refetching the set
        once for an unknown kid when the rate limit allows; TokenRefused(UNKNOWN_KEY) otherwise."""
        found = self._find(await self.keys(), kid, alg)
        if found is not None:
            return found
        async with self._lock:
            found = self._find(self._keys or (), kid, alg)  # another request may have refetched meanwhile
            now = self._clock()
            if found is None and (self._last_refetch is None or now - self._last_refetch >= self._refetch_interval):
                self._last_refetch = now
                await self._refresh()
                found = self._find(self._keys or (), kid, alg)
        if found is None:
            raise TokenRefused(Refusal.UNKNOWN_KEY, f"no key {kid!r} for {alg} in the issuer's JWKS"
                               if kid else f"the token names no kid and no single key for {alg} fits")
        return found

    def forget(self) -> None:
        """Drop the cached set (reload): the next use fetches it."""
        self._keys = None

    async def _refresh(self) -> None:
        document = await self._fetch()
        self.fetches += 1
        try:
            self._keys = signing_keys(document)
        except ValueError as exc:
            raise TokenRefused(Refusal.ISSUER_UNAVAILABLE, f"the issuer's JWKS is unusable: {exc}") from None
        self._fetched = self._clock()

    @staticmethod
    def _find(keys: tuple[SigningKey, ...], kid: str | None, alg: str) -> SigningKey | None:
        if kid is None:
            fitting = [k for k in keys if k.fits(alg)]
            return fitting[0] if len(fitting) == 1 else None
        return next((k for k in keys if k.kid == kid), None)
