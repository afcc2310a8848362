"""``POST /auth/token``: exchange a name and password (HTTP Basic) for a bearer token."""

from __future__ import annotations

import json

from luigi_appliance.auth import Accounts
from luigi_appliance.auth.basic import parse_basic
from luigi_appliance.auth.bearer import BearerAuthenticator
from luigi_appliance.auth.tokens import TokenService
from luigi_appliance.server.guard import GuardMixin


class TokenHandler(GuardMixin):
    """Only a name and password may mint a token, and the token is for exactly that account.

    The guard has authenticated the request already, possibly through a browser session or a
    token; neither may be exchanged for a new token (a stolen token could otherwise be renewed
    forever), so the Basic credentials are checked here again (a cache hit: the guard just
    verified them) and the token names their principal.
    """

    def initialize(self, tokens: TokenService, passwords: Accounts) -> None:
        self._tokens = tokens
        self._passwords = passwords

    async def post(self) -> None:
        creds = parse_basic(self.request.headers.get("Authorization"))
        source = self.request.remote_ip or ""
        principal = await self._passwords.check(creds[0], creds[1], source) if creds else None
        if principal is None:
            self.send_error(403, reason_text="tokens are issued for a name and password (HTTP Basic) only")
            return
        issued = self._tokens.issue(principal)
        if self.guard.metrics is not None:
            self.guard.metrics.token_issued(str(principal.role))
        if self.guard.audit is not None:
            self.guard.audit.record("token", principal=principal.name, source=source, outcome="issued",
                                    expires_in=issued.expires_in)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"token_type": "Bearer", "access_token": issued.token,
                                "expires_in": issued.expires_in}))


def routes(bearer: BearerAuthenticator | None) -> list[tuple[str, type, dict]]:
    """What the bearer scheme brings: ``/auth/token``, served only when tokens are accepted."""
    if bearer is None:
        return []
    return [(r"/auth/token", TokenHandler, {"tokens": bearer.tokens, "passwords": bearer.accounts})]
