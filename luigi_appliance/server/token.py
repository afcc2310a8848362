"""``POST /auth/token``: our bearer token for a name and password (HTTP Basic), or for a JWT from
a configured OpenID issuer (OAuth 2.0 Token Exchange, RFC 8693).

The route needs no authentication in the policy (policy.py: role None) because a token exchange
carries no credential the guard knows; this handler authenticates both grants itself and
answers every other request with a refusal:

* no ``grant_type`` (today's clients): the guard's own schemes, then the HTTP Basic name and
  password again, exactly as before the exchange existed (throttle and lockout, 401 with the
  Basic challenge, 403 for a token or a session: neither is renewed into a new token);
* ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``: the ``subject_token`` (a JWT,
  ``subject_token_type`` ``...:jwt`` or ``...:access_token``) verified by the configured issuers
  (auth/oidc), answered with RFC 8693's JSON and our token for the principal its claims map to;
* any other grant: ``unsupported_grant_type``.

Errors of the exchange follow RFC 6749 section 5.2: 400 ``{"error", "error_description"}``; a
refused subject token is ``invalid_request``, as RFC 8693 section 2.2.2 requires for a subject
token "invalid for any reason, or unacceptable based on policy", with the refusal class in the
description. An issuer that cannot be reached answers 503 ``temporarily_unavailable``: retrying
may help. Every exchange is audited (``token_exchange``: issuer, subject, client id, jti, or
the refusal class) and counted; the subject token itself is never logged, audited or answered.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import jwt

from luigi_appliance.auth import Accounts, AuthError, Principal
from luigi_appliance.auth.basic import parse_basic
from luigi_appliance.auth.bearer import BearerAuthenticator
from luigi_appliance.auth.oidc import OidcVerifier, Refusal, TokenRefused, VerifiedToken
from luigi_appliance.auth.outcomes import Reason
from luigi_appliance.auth.tokens import TokenService
from luigi_appliance.server.guard import GuardMixin, Refused, auth_refusal

log = logging.getLogger(__name__)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a grant type name
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a token type name
# Verified the same way (signature, iss, aud, times): a JWT, or a JWT access token (RFC 9068,
# what client credentials give). An ID token is refused: its audience is the client it was
# issued to, it is no credential for a service (OpenID Connect Core, section 2).
SUBJECT_TOKEN_TYPES = frozenset({"urn:ietf:params:oauth:token-type:jwt", ACCESS_TOKEN_TYPE})
# Claimed by the token, not verified: clipped before it reaches the audit.
_CLAIMED_MAX = 200
OIDC_OUTCOME = "oidc"  # the metrics' backend label of an exchange no issuer accepted


class ExchangeError(Exception):
    """An RFC 6749 section 5.2 error answer."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class TokenHandler(GuardMixin):
    """Only a name and password, or a verified JWT of a configured issuer, may mint a token, and
    the token is for exactly that account or identity.

    A browser session or a token is never exchanged for a new token (a stolen token could
    otherwise be renewed forever): the password grant checks the Basic credentials here again (a
    cache hit: the guard's schemes just verified them) and the token names their principal.
    """

    def initialize(self, tokens: TokenService, passwords: Accounts, oidc: OidcVerifier | None) -> None:
        self._tokens = tokens
        self._passwords = passwords
        self._oidc = oidc

    async def post(self) -> None:
        try:
            grant_type = self._parameter("grant_type")
        except ExchangeError as exc:
            self._exchange_error(exc)
            return
        if grant_type is None:
            await self._password_grant()
        elif grant_type == TOKEN_EXCHANGE:
            await self._token_exchange()
        else:
            self._exchange_error(ExchangeError("unsupported_grant_type",
                                               f"grant_type must be {TOKEN_EXCHANGE} (or absent, with HTTP Basic)"))

    # ---- the password grant: what /auth/token always did ---------------------------------------

    async def _password_grant(self) -> None:
        source = self.request.remote_ip or ""
        try:
            principal = await self._password_principal(source)
        except AuthError as exc:
            self._refuse(auth_refusal(exc))
            return
        except Refused as refusal:
            self._refuse(refusal)
            return
        if principal is None:
            self.send_error(403, reason_text="tokens are issued for a name and password (HTTP Basic) only")
            return
        issued = self._tokens.issue(principal)
        self._count_issued(principal)
        if self.guard.audit is not None:
            self.guard.audit.record("token", principal=principal.name, source=source, outcome="issued",
                                    expires_in=issued.expires_in)
        self._answer({"token_type": "Bearer", "access_token": issued.token, "expires_in": issued.expires_in})

    async def _password_principal(self, source: str) -> Principal | None:
        """The guard's authentication, as the route had it before the exchange (any scheme: 401
        with the Basic challenge when none), then the Basic name and password's own principal
        (None for a token or a session)."""
        principal = await self._authenticate()
        if principal is None:
            raise self._unauthenticated(self.route_rule)
        self.principal = principal
        creds = parse_basic(self.request.headers.get("Authorization"))
        return await self._passwords.check(creds[0], creds[1], source) if creds else None

    # ---- the token exchange (RFC 8693) ---------------------------------------------------------

    async def _token_exchange(self) -> None:
        source = self.request.remote_ip or ""
        try:
            subject_token = self._exchange_request()
            verified = await self._verify(subject_token, source)
        except ExchangeError as exc:
            self._exchange_error(exc)
            return
        principal = verified.principal
        issued = self._tokens.issue(principal, ttl=_subject_lifetime(verified.claims))
        if self.guard.metrics is not None:
            self.guard.metrics.auth_succeeded(principal.backend)
        self._count_issued(principal)
        claims = verified.claims
        log.info("Token exchange: issuer %s, subject %r, client %r: token for %s (%s) valid %ds", verified.issuer,
                 _claim(claims, "sub"), _client_id(claims), principal.name, principal.role, issued.expires_in)
        if self.guard.audit is not None:
            self.guard.audit.record("token_exchange", principal=principal.name, source=source, outcome="issued",
                                    issuer=verified.issuer, subject=_claim(claims, "sub"),
                                    client_id=_client_id(claims), jti=_claim(claims, "jti"),
                                    role=str(principal.role), expires_in=issued.expires_in)
        self._answer({"access_token": issued.token, "issued_token_type": ACCESS_TOKEN_TYPE,
                      "token_type": "Bearer", "expires_in": issued.expires_in})

    def _exchange_request(self) -> str:
        """The subject token of a well-formed exchange request; ExchangeError otherwise."""
        if self._oidc is None:
            raise ExchangeError("unsupported_grant_type", "token exchange needs an [oidc.NAME] issuer "
                                                          "configured on the scheduler")
        if "Authorization" in self.request.headers:
            # The subject token is the only credential: another one would be left unchecked.
            raise ExchangeError("invalid_request", "a token exchange carries no Authorization header: "
                                                   "the subject token is the credential")
        subject_token = self._parameter("subject_token")
        token_type = self._parameter("subject_token_type")
        if not subject_token:
            raise ExchangeError("invalid_request", "subject_token is missing")
        if token_type not in SUBJECT_TOKEN_TYPES:
            raise ExchangeError("invalid_request", "subject_token_type must be one of "
                                                   + ", ".join(sorted(SUBJECT_TOKEN_TYPES)))
        requested = self._parameter("requested_token_type")
        if requested not in (None, ACCESS_TOKEN_TYPE):
            raise ExchangeError("invalid_request", f"requested_token_type: only {ACCESS_TOKEN_TYPE} is issued")
        if self._parameter("actor_token") is not None:
            raise ExchangeError("invalid_request", "actor_token: delegation is not supported")
        # audience, resource and scope are not checked: the token issued is accepted by this
        # scheduler only, whatever the client asks for; the subject token's own audience is.
        return subject_token

    async def _verify(self, subject_token: str, source: str) -> VerifiedToken:
        assert self._oidc is not None
        try:
            return await self._oidc.verify_subject_token(subject_token)
        except TokenRefused as exc:
            self._refused(exc, subject_token, source)
            if exc.reason is Refusal.ISSUER_UNAVAILABLE:
                raise ExchangeError("temporarily_unavailable", f"subject token not verified ({exc.reason}): "
                                                               "the issuer cannot be reached; try again", 503) from None
            raise ExchangeError("invalid_request", f"subject token refused ({exc.reason})") from None

    def _refused(self, exc: TokenRefused, subject_token: str, source: str) -> None:
        claimed = _claimed_issuer(subject_token)
        log.warning("Refused a token exchange from %s (%s, issuer claimed %r): %s", source, exc.reason,
                    claimed, exc)
        if self.guard.metrics is not None:
            self.guard.metrics.auth_failed(OIDC_OUTCOME, Reason.of_refusal(exc.reason))
        if self.guard.audit is not None:
            outcome = "unavailable" if exc.reason is Refusal.ISSUER_UNAVAILABLE else "refused"
            self.guard.audit.record("token_exchange", principal=None, source=source, outcome=outcome,
                                    reason=str(exc.reason), claimed_issuer=claimed)

    # ---- shared --------------------------------------------------------------------------------

    def _parameter(self, name: str) -> str | None:
        """A form parameter of the body; sent more than once is invalid (RFC 6749 section 3.2)."""
        values = self.request.body_arguments.get(name, [])
        if len(values) > 1:
            raise ExchangeError("invalid_request", f"{name} is given more than once")
        if not values:
            return None
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise ExchangeError("invalid_request", f"{name} is not UTF-8") from None

    def _count_issued(self, principal: Principal) -> None:
        if self.guard.metrics is not None:
            self.guard.metrics.token_issued(str(principal.role))

    def _answer(self, body: Mapping[str, Any]) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(body))

    def _exchange_error(self, exc: ExchangeError) -> None:
        self.set_status(exc.status)
        self._answer({"error": exc.error, "error_description": exc.description})


def _subject_lifetime(claims: Mapping[str, Any]) -> float | None:
    """How long the subject token still lives (our token ends with it: what the issuer vouched
    for ends there; TokenService.issue also bounds it by [tokens] ttl). At least a second, for a
    token accepted within the clock skew; None without an exp."""
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    return max(1.0, exp - time.time())


def _claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None


def _client_id(claims: Mapping[str, Any]) -> str | None:
    """The client the token was issued to: ``client_id`` (RFC 9068, RFC 8693), else ``azp``."""
    return _claim(claims, "client_id") or _claim(claims, "azp")


def _claimed_issuer(token: str) -> str | None:
    """The ``iss`` a refused token claims (unverified: for the audit and the log only)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer[:_CLAIMED_MAX] if isinstance(issuer, str) else None


def routes(bearer: BearerAuthenticator | None, oidc: OidcVerifier | None = None) -> list[tuple[str, type, dict]]:
    """What the bearer scheme brings: ``/auth/token``, served only when tokens are accepted; with
    ``oidc`` it also exchanges the configured issuers' JWTs."""
    if bearer is None:
        return []
    return [(r"/auth/token", TokenHandler, {"tokens": bearer.tokens, "passwords": bearer.accounts, "oidc": oidc})]
