"""OpenID Connect: identities from configured issuers (``[oidc.NAME]`` sections).

What the rest of the appliance sees of OIDC is declared here, so the pieces are built against
one contract:

* ``Issuers`` (oidc/issuers.py) holds every configured issuer: discovery, the JWKS cache with
  rotation, JWT verification with the algorithm allowlist, and the mapping of verified claims to
  a ``Principal`` (role and task families from ``[roles]``/``[families]`` rules over claims).
* The token exchange (RFC 8693) at ``POST /auth/token`` calls ``verify_subject_token``.
* The browser login (authorization code + PKCE) calls ``issuer(name)`` for the endpoints and
  the client's authentication, and ``verify_id_token``.

A refusal is always ``TokenRefused`` with a bounded ``Refusal`` class (audited and counted; the
token itself is never logged or audited).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from luigi_appliance.auth import AuthError, Principal


class Refusal(enum.StrEnum):
    """Why a token from an issuer was refused (the audit's and the metrics' reason class)."""

    MALFORMED = "malformed"  # not a JWT, or claims of the wrong type
    UNKNOWN_ISSUER = "unknown_issuer"  # iss names no configured issuer (or not one allowed here)
    BAD_ALGORITHM = "bad_algorithm"  # alg none, HMAC, or outside the issuer's allowlist
    UNKNOWN_KEY = "unknown_key"  # kid not in the JWKS, even after one refetch
    BAD_SIGNATURE = "bad_signature"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED = "expired"  # exp passed (beyond the clock skew)
    NOT_YET_VALID = "not_yet_valid"  # nbf/iat in the future (beyond the clock skew)
    BAD_NONCE = "bad_nonce"  # ID token of another login
    NO_ROLE = "no_role"  # verified, but no rule gives the identity a role
    ISSUER_UNAVAILABLE = "issuer_unavailable"  # discovery or JWKS cannot be fetched


class TokenRefused(AuthError):
    """A token was refused; ``reason`` is the class, the message says why for the log (never
    the token)."""

    def __init__(self, reason: Refusal, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature, issuer, audience and times were verified."""

    issuer: str  # the NAME of [oidc.NAME]
    claims: Mapping[str, Any]
    principal: Principal  # backend "oidc:NAME"


@dataclass(frozen=True)
class IssuerEndpoints:
    """What the browser login needs of an issuer's discovery document."""

    issuer: str  # the iss value
    authorization_endpoint: str
    token_endpoint: str
    end_session_endpoint: str | None


class IssuerClient(Protocol):
    """One configured issuer, as the browser login uses it."""

    name: str
    client_id: str
    scopes: tuple[str, ...]
    browser_login: bool  # [oidc.NAME] browser_login: offered on the login page

    async def endpoints(self) -> IssuerEndpoints:
        """From discovery (cached); TokenRefused(ISSUER_UNAVAILABLE) when it cannot be fetched."""

    async def token_request(self, form: Mapping[str, str]) -> Mapping[str, Any]:
        """POST ``form`` to the token endpoint with this client's authentication
        (client_secret_basic or private_key_jwt), over TLS verified with the issuer's CA; the
        JSON answer. TokenRefused(ISSUER_UNAVAILABLE) when unreachable; an OAuth error answer
        raises TokenRefused(MALFORMED) naming the error code."""

    async def verify_id_token(self, token: str, *, nonce: str) -> VerifiedToken:
        """An ID token of this issuer for this client (aud = client_id, nonce checked)."""

    async def verify_logout_token(self, token: str) -> Mapping[str, Any]:
        """A back-channel logout token (OIDC Back-Channel Logout 1.0 checks: typ/events/sid or
        sub, no nonce); its verified claims."""


class OidcVerifier(Protocol):
    """Every configured issuer."""

    def names(self) -> tuple[str, ...]:
        """The configured issuer names, in configuration order."""

    def issuer(self, name: str) -> IssuerClient:
        """The issuer ``name``; KeyError when not configured."""

    async def verify_subject_token(self, token: str) -> VerifiedToken:
        """A JWT from any configured issuer that accepts token exchange (chosen by its
        unverified ``iss``, then fully verified against that issuer's settings: audience,
        algorithms, times, key), mapped to a principal."""
