"""Every configured issuer (``[oidc.NAME]``): discovery, the JWKS, verification, the principal.

``Issuers`` is the appliance's ``OidcVerifier`` and ``Issuer`` one ``IssuerClient``
(luigi_appliance/auth/oidc/__init__.py is the contract). Verification is PyJWT's, constrained
here: the algorithm comes from the issuer's allowlist (the token's header only chooses among
it), the key from the JWKS by kid and of the algorithm's key type, and iss, aud, exp, nbf and
iat are checked with the configured clock skew. Verified claims become a principal by the
issuer's rules (claims.py). Network I/O goes through transport.py and never blocks the IOLoop.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from luigi_appliance.auth import Principal
from luigi_appliance.auth.oidc import IssuerEndpoints, Refusal, TokenRefused, VerifiedToken
from luigi_appliance.auth.oidc.claims import Grant, Identity, grant, groups_of, user_name
from luigi_appliance.auth.oidc.jwks import KeyCache, SigningKey
from luigi_appliance.auth.oidc.settings import OidcIssuerSettings
from luigi_appliance.auth.oidc.transport import request_json, tls_context, unavailable
from luigi_appliance.errors import ApplianceError
from luigi_appliance.secret_values import read_secret_file, secret_text

if TYPE_CHECKING:
    from luigi_appliance.config import Settings

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# PyJWT's refusals, by class (the first that matches: subclasses before their bases).
_REFUSALS: tuple[tuple[type[Exception], Refusal], ...] = (
    (jwt.ExpiredSignatureError, Refusal.EXPIRED),
    (jwt.ImmatureSignatureError, Refusal.NOT_YET_VALID),
    (jwt.InvalidAudienceError, Refusal.WRONG_AUDIENCE),
    (jwt.InvalidIssuerError, Refusal.UNKNOWN_ISSUER),
    (jwt.InvalidSignatureError, Refusal.BAD_SIGNATURE),
    (jwt.InvalidAlgorithmError, Refusal.BAD_ALGORITHM),
    (jwt.InvalidKeyError, Refusal.BAD_ALGORITHM),
)


@dataclass(frozen=True)
class Discovery:
    """What the scheduler uses of an issuer's discovery document (every URL https)."""

    issuer: str
    jwks_uri: str
    authorization_endpoint: str | None
    token_endpoint: str | None
    end_session_endpoint: str | None
    signing_algorithms: tuple[str, ...]  # id_token_signing_alg_values_supported, as published


def parse_discovery(document: Any, expected_issuer: str, url: str) -> Discovery:
    """The discovery document checked: its issuer is exactly the configured one, URLs are https."""
    if not isinstance(document, Mapping):
        raise unavailable(url, "the discovery document is not a JSON object")
    if document.get("issuer") != expected_issuer:
        raise unavailable(url, f"the discovery document names issuer {document.get('issuer')!r}, not the "
                               f"configured {expected_issuer!r}; set issuer to exactly the issuer's URL")

    def endpoint(name: str, required: bool = False) -> str | None:
        value = document.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.startswith("https://"):
            raise unavailable(url, f"the discovery document's {name} is not an https URL")
        return value

    algorithms = document.get("id_token_signing_alg_values_supported")
    return Discovery(expected_issuer, endpoint("jwks_uri", required=True) or "",
                     endpoint("authorization_endpoint"), endpoint("token_endpoint"),
                     endpoint("end_session_endpoint"),
                     tuple(a for a in algorithms if isinstance(a, str)) if isinstance(algorithms, list) else ())


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a compact JWS, NOT verified: only to choose the issuer that verifies it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise TokenRefused(Refusal.MALFORMED, "not a JWT") from None
    if not isinstance(claims, dict):
        raise TokenRefused(Refusal.MALFORMED, "the JWT's claims are not a JSON object")
    return claims


def _signing_algorithm(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError("expected an RSA, EC (P-256/384/521) or Ed25519 private key")


class Issuer:
    """One ``[oidc.NAME]`` issuer: an ``IssuerClient``, and what token exchange and ``oidc``
    commands use of it."""

    def __init__(self, name: str, settings: OidcIssuerSettings, clock: Callable[[], float] = time.monotonic):
        assert settings.issuer is not None, "the loader refuses an [oidc.NAME] without issuer"
        self.name = name
        self.settings = settings
        self.issuer_url = settings.issuer
        self.client_id = settings.client_id or ""
        self.scopes = settings.scopes
        self.browser_login = settings.browser_login
        self._clock = clock
        self._context = tls_context(settings.ca_file)
        self._discovery: Discovery | None = None
        self._discovered = 0.0
        self._credential: Any = None  # the client secret (str) or private key, read when first used
        self.keys = KeyCache(self._fetch_jwks, settings.cache_ttl, settings.jwks_refetch_interval, clock)

    @property
    def discovery_url(self) -> str:
        return self.issuer_url.rstrip("/") + DISCOVERY_PATH

    def reload(self) -> None:
        """SIGHUP: the CA file and the client's credentials are read again, the caches dropped.
        A CA file that cannot be read now leaves the one read before in force (logged)."""
        try:
            self._context = tls_context(self.settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            log.error("[oidc.%s] ca_file %s cannot be read (%s); the one read before stays in force",
                      self.name, self.settings.ca_file, getattr(exc, "strerror", None) or exc)
        self._discovery = None
        self._credential = None
        self.keys.forget()

    # ---- the issuer's documents ---------------------------------------------------------------

    async def discovery(self) -> Discovery:
        """The discovery document (cached for cache_ttl); TokenRefused(ISSUER_UNAVAILABLE)."""
        if self._discovery is None or self._clock() - self._discovered >= self.settings.cache_ttl:
            _, document = await self._get(self.discovery_url)
            self._discovery = parse_discovery(document, self.issuer_url, self.discovery_url)
            self._discovered = self._clock()
        return self._discovery

    async def _fetch_jwks(self) -> Any:
        return (await self._get((await self.discovery()).jwks_uri))[1]

    async def _get(self, url: str) -> tuple[int, Any]:
        status, document = await request_json(url, self._context, self.settings.timeout)
        if status != 200:
            raise unavailable(url, f"HTTP {status}")
        return status, document

    async def endpoints(self) -> IssuerEndpoints:
        found = await self.discovery()
        if found.authorization_endpoint is None or found.token_endpoint is None:
            raise unavailable(self.discovery_url, "the issuer publishes no authorization_endpoint and "
                                                  "token_endpoint: it cannot be used for browser login")
        return IssuerEndpoints(found.issuer, found.authorization_endpoint, found.token_endpoint,
                               found.end_session_endpoint)

    # ---- the token endpoint -------------------------------------------------------------------

    def _read_credential(self) -> Any:
        if self._credential is not None:
            return self._credential
        s = self.settings
        try:
            if s.client_auth == "private_key_jwt":
                if s.private_key_file is None:
                    raise ApplianceError(f"[oidc.{self.name}] client_auth = private_key_jwt needs private_key_file")
                key = serialization.load_pem_private_key(read_secret_file(s.private_key_file), None)
                _signing_algorithm(key)
                self._credential = key
            else:
                secret = secret_text(s.client_secret, s.client_secret_file)
                if secret is None:
                    raise ApplianceError(f"[oidc.{self.name}] has no client secret: set client_secret_file")
                self._credential = secret
        except (ApplianceError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise TokenRefused(Refusal.ISSUER_UNAVAILABLE, f"[oidc.{self.name}] client credentials: {exc}") from None
        return self._credential

    def client_assertion(self, token_endpoint: str) -> str:
        """A private_key_jwt client assertion (RFC 7523) for ``token_endpoint``, valid one minute."""
        key = self._read_credential()
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": token_endpoint,
                  "jti": secrets.token_urlsafe(24), "iat": now, "exp": now + 60}
        headers = {"kid": self.settings.private_key_id} if self.settings.private_key_id else None
        return jwt.encode(claims, key, algorithm=_signing_algorithm(key), headers=headers)

    async def token_request(self, form: Mapping[str, str]) -> Mapping[str, Any]:
        endpoint = (await self.endpoints()).token_endpoint
        body = dict(form)
        auth: tuple[str, str] | None = None
        if self.settings.client_auth == "private_key_jwt":
            body.update(client_id=self.client_id, client_assertion_type=ASSERTION_TYPE,
                        client_assertion=self.client_assertion(endpoint))
        else:
            auth = (self.client_id, self._read_credential())
        status, answer = await request_json(endpoint, self._context, self.settings.timeout, form=body, auth=auth)
        if status != 200:
            error = answer.get("error")
            code = error if isinstance(error, str) and error.isascii() and len(error) <= 64 else "invalid answer"
            raise TokenRefused(Refusal.MALFORMED, f"the token endpoint {endpoint} answered HTTP {status} {code}")
        if not isinstance(answer, dict):
            raise TokenRefused(Refusal.MALFORMED, f"the token endpoint {endpoint} answered no JSON object")
        return answer

    # ---- verification -------------------------------------------------------------------------

    async def verify(self, token: str, audience: tuple[str, ...],
                     required: tuple[str, ...] = ("exp",)) -> dict[str, Any]:
        """The claims of ``token`` once its signature (allowlisted alg, JWKS key of that type),
        iss, aud (one of ``audience``) and times are verified; TokenRefused with the class otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRefused(Refusal.MALFORMED, "not a JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            raise TokenRefused(Refusal.MALFORMED, "the JWT header's alg or kid is not a string")
        if alg not in self.settings.algorithms:
            raise TokenRefused(Refusal.BAD_ALGORITHM, f"alg {alg[:20]!r} is not among [oidc.{self.name}] algorithms")
        if not audience:
            raise TokenRefused(Refusal.WRONG_AUDIENCE, f"[oidc.{self.name}] names no audience to accept")
        key: SigningKey = await self.keys.key(kid, alg)
        if not key.fits(alg):
            raise TokenRefused(Refusal.BAD_ALGORITHM, f"alg {alg} does not fit the {key.kty} key {kid!r}")
        try:
            claims = jwt.decode(token, key.key.key, algorithms=[alg], audience=list(audience), issuer=self.issuer_url,
                                leeway=self.settings.clock_skew,
                                options={"require": ["iss", "aud", *required], "verify_iat": True})
        except jwt.MissingRequiredClaimError as exc:
            reason = Refusal.WRONG_AUDIENCE if exc.claim == "aud" else Refusal.MALFORMED
            raise TokenRefused(reason, f"the token has no {exc.claim} claim") from None
        except jwt.InvalidTokenError as exc:
            reason = next((r for cls, r in _REFUSALS if isinstance(exc, cls)), Refusal.MALFORMED)
            raise TokenRefused(reason, f"token refused: {exc}") from None
        return claims

    def identity(self, claims: Mapping[str, Any]) -> Identity:
        """The user name and groups the claims give; TokenRefused(MALFORMED) when unusable."""
        try:
            return Identity(user_name(claims, self.settings.username_claim),
                            groups_of(claims, self.settings.groups_claim))
        except ValueError as exc:
            raise TokenRefused(Refusal.MALFORMED, str(exc)) from None

    def grant(self, claims: Mapping[str, Any], identity: Identity) -> Grant:
        """What this issuer's rules give the identity (every matching rule contributing)."""
        return grant(self.name, claims, identity.groups, self.settings.roles, self.settings.families)

    def verified(self, claims: Mapping[str, Any]) -> VerifiedToken:
        """Verified claims as a principal; TokenRefused(NO_ROLE) when no rule gives a role."""
        identity = self.identity(claims)
        granted = self.grant(claims, identity)
        if granted.role is None:
            raise TokenRefused(Refusal.NO_ROLE, f"{identity.name} of issuer {self.name}: no [oidc.{self.name}] "
                                                f"roles rule matches")
        principal = Principal(identity.name, granted.role, f"oidc:{self.name}", identity.groups, granted.families)
        return VerifiedToken(self.name, claims, principal)

    async def verify_id_token(self, token: str, *, nonce: str) -> VerifiedToken:
        claims = await self.verify(token, (self.client_id,), required=("exp", "iat", "sub"))
        several = isinstance(claims["aud"], list) and len(claims["aud"]) > 1
        if several and claims.get("azp") != self.client_id:
            raise TokenRefused(Refusal.WRONG_AUDIENCE, "an ID token for several audiences without azp = client_id")
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
            raise TokenRefused(Refusal.BAD_NONCE, "the ID token's nonce is not this login's")
        return self.verified(claims)

    async def verify_logout_token(self, token: str) -> Mapping[str, Any]:
        try:
            typ = jwt.get_unverified_header(token).get("typ")
        except jwt.InvalidTokenError:
            raise TokenRefused(Refusal.MALFORMED, "not a JWT") from None
        if typ is not None and str(typ).lower() not in ("logout+jwt", "application/logout+jwt", "jwt"):
            raise TokenRefused(Refusal.MALFORMED, f"a logout token of typ {str(typ)[:20]!r}")
        claims = await self.verify(token, (self.client_id,), required=("exp", "iat", "jti"))
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
            raise TokenRefused(Refusal.MALFORMED, "the logout token has no back-channel logout event")
        if "nonce" in claims:
            raise TokenRefused(Refusal.MALFORMED, "a logout token must not carry a nonce")
        if not isinstance(claims.get("sid"), str) and not isinstance(claims.get("sub"), str):
            raise TokenRefused(Refusal.MALFORMED, "the logout token names neither sid nor sub")
        return claims


@dataclass(frozen=True)
class Explanation:
    """What ``oidc explain`` prints: the issuer, the identity, and every rule that matched."""

    issuer: str
    claims: Mapping[str, Any]
    identity: Identity
    grant: Grant
    audience: tuple[str, ...]


class Issuers:
    """Every configured issuer: the appliance's ``OidcVerifier``."""

    def __init__(self, settings: Mapping[str, OidcIssuerSettings], clock: Callable[[], float] = time.monotonic):
        self._issuers = {name: Issuer(name, s, clock) for name, s in settings.items()}

    def names(self) -> tuple[str, ...]:
        return tuple(self._issuers)

    def issuer(self, name: str) -> Issuer:
        return self._issuers[name]

    def reload(self) -> None:
        """SIGHUP: CA files and client credentials read again, discovery and JWKS fetched anew."""
        for issuer in self._issuers.values():
            issuer.reload()

    def _by_iss(self, token: str, *, exchange_only: bool) -> Issuer:
        iss = unverified_claims(token).get("iss")
        matching = [i for i in self._issuers.values() if i.issuer_url == iss]
        if not matching:
            shown = iss[:100] if isinstance(iss, str) else type(iss).__name__
            raise TokenRefused(Refusal.UNKNOWN_ISSUER, f"iss {shown!r} is no configured issuer")
        accepting = [i for i in matching if i.settings.token_exchange] if exchange_only else matching
        if not accepting:
            raise TokenRefused(Refusal.UNKNOWN_ISSUER, f"issuer {matching[0].name} does not accept token exchange "
                                                       f"([oidc.{matching[0].name}] token_exchange)")
        return accepting[0]

    async def verify_subject_token(self, token: str) -> VerifiedToken:
        issuer = self._by_iss(token, exchange_only=True)
        claims = await issuer.verify(token, issuer.settings.audience, required=("exp", "sub"))
        return issuer.verified(claims)

    async def explain(self, token: str) -> Explanation:
        """Verify ``token`` as any configured issuer's (audience: the issuer's token-exchange
        audience or its client id), then apply its rules without refusing for want of a role."""
        issuer = self._by_iss(token, exchange_only=False)
        s = issuer.settings
        audience = tuple(dict.fromkeys((*s.audience, *((issuer.client_id,) if issuer.client_id else ()))))
        claims = await issuer.verify(token, audience, required=("exp", "sub"))
        identity = issuer.identity(claims)
        return Explanation(issuer.name, claims, identity, issuer.grant(claims, identity), audience)


def issuers_for(settings: Settings) -> Issuers | None:
    """The configured issuers, or None when there is no ``[oidc.NAME]`` section."""
    return Issuers(settings.oidc) if settings.oidc else None
