"""The ``bearer`` credential scheme: ``Authorization: Bearer <token>`` (tokens: auth/tokens.py).

A token names an account; what the account may do is what it may do now, checked once per
account per generation of the accounts (see ``BearerAuthenticator``).
"""

from __future__ import annotations

import logging
import time

from tornado.httputil import HTTPServerRequest

from luigi_appliance.auth import Accounts, AuthUnavailable, Principal
from luigi_appliance.auth.outcomes import BEARER, UNCOUNTED, AuthOutcomes, Reason
from luigi_appliance.auth.registry import SchemeContext, register_scheme
from luigi_appliance.auth.tokens import MAX_VERIFIED, TOKEN_BACKEND_PREFIX, TokenService, keys_file

log = logging.getLogger(__name__)

# The backend of an identity verified by an [oidc.NAME] issuer (auth/oidc: "oidc:NAME").
OIDC_BACKEND_PREFIX = "oidc:"
# A token kept as issued while its account could not be checked is checked again after this.
RECHECK_UNCONFIRMED_AFTER = 30.0


class BearerAuthenticator:
    """Authenticator for ``Authorization: Bearer <token>``.

    The token's principal is replaced by what its account is now (``Accounts.current``):
    refused when the account is gone or has no role, with its current role, groups and
    families otherwise. While the backend cannot say (the directory is down), the token keeps
    the principal it was issued with when ``keep_during_outage`` (an ``[ldap] outage_grace``
    above 0), else the answer is 503.
    """

    def __init__(self, tokens: TokenService, accounts: Accounts, *, keep_during_outage: bool = True,
                 outcomes: AuthOutcomes = UNCOUNTED):
        self.tokens = tokens
        self._outcomes = outcomes
        # Also what /auth/token checks the name and password with (server/token.py).
        self.accounts = accounts
        self._keep_during_outage = keep_during_outage
        # Token -> its principal now (None: refused), for the accounts' current generation.
        self._checked: dict[str, Principal | None] = {}
        # Tokens kept as issued while their account could not be checked -> when to ask again.
        self._unconfirmed: dict[str, float] = {}
        self._generation = accounts.generation

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        principal = await self._principal(value.strip(), request.remote_ip or "")
        if principal is not None:
            self._outcomes.auth_succeeded(BEARER)
        return principal

    async def _principal(self, token: str, remote_ip: str) -> Principal | None:
        claimed = self.tokens.verify(token)
        if claimed is None:
            log.warning("Refused an invalid or expired bearer token from %s", remote_ip)
            self._outcomes.auth_failed(BEARER, Reason.INVALID_TOKEN)
            return None
        if self._generation != self.accounts.generation:
            self._checked.clear()
            self._unconfirmed.clear()
            self._generation = self.accounts.generation
        if token in self._checked and not (self._unconfirmed and self._due(token)):
            principal = self._checked[token]
        else:
            principal = await self._check(token, claimed)
        if principal is None:
            self._outcomes.auth_failed(BEARER, Reason.ACCOUNT_GONE)
        return principal

    def _due(self, token: str) -> bool:
        again = self._unconfirmed.get(token)
        return again is not None and again <= time.monotonic()

    async def _check(self, token: str, claimed: Principal) -> Principal | None:
        backend = claimed.backend.removeprefix(TOKEN_BACKEND_PREFIX)
        generation = self._generation
        if backend.startswith(OIDC_BACKEND_PREFIX):
            # An identity of an issuer (a token exchange) has no account here to look up: its
            # role and families are those its verified claims mapped to, for the token's short
            # life (never beyond [tokens] ttl nor the issuer's JWT: server/token.py).
            self._remember(generation, token, claimed, unconfirmed=False)
            return claimed
        try:
            account = await self.accounts.current(backend, claimed.name)
        except AuthUnavailable as exc:
            if not self._keep_during_outage:
                self._outcomes.auth_failed(BEARER, Reason.UNAVAILABLE)
                raise
            log.warning("Accepting the bearer token of %r as issued: its account cannot be checked now (%s)",
                        claimed.name, exc)
            self._remember(generation, token, claimed, unconfirmed=True)
            return claimed
        principal = None if account is None else Principal(
            account.name, account.role, TOKEN_BACKEND_PREFIX + account.backend, account.groups, account.families)
        if principal is None:
            log.warning("Refused the bearer token of %r: the account no longer exists or has no role", claimed.name)
        elif principal.role != claimed.role:
            log.info("The bearer token of %r now carries role %s (issued with %s)", claimed.name,
                     principal.role, claimed.role)
        self._remember(generation, token, principal, unconfirmed=False)
        return principal

    def _remember(self, generation: int, token: str, principal: Principal | None, *, unconfirmed: bool) -> None:
        if generation != self._generation or generation != self.accounts.generation:
            return  # a reload happened meanwhile: the next use checks again
        if len(self._checked) >= MAX_VERIFIED:
            # Re-checking is cheap: the accounts remember their answers for the generation.
            self._checked.clear()
            self._unconfirmed.clear()
        self._checked[token] = principal
        if unconfirmed:
            self._unconfirmed[token] = time.monotonic() + RECHECK_UNCONFIRMED_AFTER
        else:
            self._unconfirmed.pop(token, None)

    def reload(self) -> None:
        self.tokens.reload()


def bearer_scheme(context: SchemeContext) -> BearerAuthenticator:
    """Tokens from /auth/token, signed with the keys of ``[tokens] keys_file``."""
    settings = context.settings
    tokens = TokenService(keys_file(settings), settings.tokens.ttl)
    # Tokens are checked against the accounts as of the last reload; while the directory is
    # down they keep their issued principal only if cached logins may too (outage grace).
    return BearerAuthenticator(tokens, context.accounts, keep_during_outage=settings.ldap.outage_grace > 0,
                               outcomes=context.outcomes)


register_scheme("bearer", bearer_scheme)
