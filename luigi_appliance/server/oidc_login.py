"""Browser single sign-on with an OpenID Provider: ``/login/oidc/NAME`` and its callback and
back-channel logout (the authorization code flow with PKCE, OpenID Connect Core 1.0).

* ``GET /login/oidc/NAME`` starts a login at the issuer ``[oidc.NAME]``: a random ``state``,
  ``nonce`` and PKCE S256 verifier are kept here, under the SHA-256 of a random value in a
  short-lived ``__Host-luigi-oidc`` cookie (HttpOnly, Secure, SameSite=Lax: the IdP's redirect
  back is a cross-site top-level GET, which a Strict cookie would not come with). The cookie
  binds the login to the browser that started it, so a code from another browser's login
  (login CSRF) finds no flow. ``next`` is kept if it is a path here (no open redirect).
* ``GET /login/oidc/NAME/callback`` takes the flow (once), checks ``state`` and the RFC 9207
  ``iss`` parameter when the IdP sends it, exchanges the code with the verifier, verifies the ID
  token (signature, audience, times and the nonce) and maps it to a principal. Then it starts
  OUR session (auth/session.py): the cookie holds only our session id whatever the group count;
  the IdP's tokens stay in this process. The session ends at the ID token's expiry (or the
  absolute timeout if sooner) unless it is renewed with the refresh token, which the first
  request past half of the ID token's lifetime does; a refused renewal ends the session.
* ``POST /login/oidc/NAME/backchannel-logout`` (Back-Channel Logout 1.0): a logout token from
  the IdP ends every session here of its ``sid`` (or of its ``sub``); 200, 400 for a bad token.

Every login, refusal, renewal failure and logout is audited (issuer, subject, the Refusal
class); no token or code is ever logged or audited.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from luigi_appliance.audit import AuditLog
from luigi_appliance.auth import Principal
from luigi_appliance.auth.oidc import IssuerClient, OidcVerifier, Refusal, TokenRefused, VerifiedToken
from luigi_appliance.auth.outcomes import Reason
from luigi_appliance.auth.session import Renewed, tokens_match
from luigi_appliance.server.guard import GuardMixin
from luigi_appliance.server.login import LoginPages, login_page, onward_page, safe_next

log = logging.getLogger(__name__)

FLOW_COOKIE_TLS = "__Host-luigi-oidc"
FLOW_COOKIE_PLAIN = "luigi-oidc"
# Long enough to type a password and pass a second factor at the IdP.
FLOW_MAX_AGE = 600
MAX_FLOWS = 10_000
# An IdP that cannot be reached for a renewal is asked again this much later (the session lives
# on meanwhile, until its ID token expires).
RENEWAL_RETRY = 15.0
_COOKIE_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_NAME_SHAPE = r"[a-z][a-z0-9_-]*"  # [oidc.NAME] (settings/loader.py _MEMBER_NAME)

# The login page's words for what an IdP's login may end with (never the IdP's own text alone).
_REFUSED = {
    Refusal.NO_ROLE: "Your account at {name} has no role on this scheduler. Ask an administrator for access.",
    Refusal.ISSUER_UNAVAILABLE: "{name} cannot be reached right now. Please try again later.",
}
_FAILED = "Signing in with {name} failed. Please try again."


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Flow:
    """A login under way: what the callback checks and needs."""

    issuer: str
    state: str
    nonce: str
    verifier: str
    redirect_uri: str
    target: str
    started: float = field(default_factory=time.monotonic)


class Flows:
    """Logins under way, by the SHA-256 of their cookie's random value; each is taken once."""

    def __init__(self) -> None:
        self._flows: dict[bytes, Flow] = {}

    def add(self, flow: Flow) -> str:
        """Keep ``flow``; the value of the cookie that names it."""
        now = time.monotonic()
        if len(self._flows) >= MAX_FLOWS:
            self._flows = {k: f for k, f in self._flows.items() if now - f.started < FLOW_MAX_AGE}
        if len(self._flows) >= MAX_FLOWS:
            # A flood of started logins must not grow memory without bound: the oldest goes.
            del self._flows[min(self._flows, key=lambda k: self._flows[k].started)]
        value = secrets.token_urlsafe(32)
        self._flows[hashlib.sha256(value.encode()).digest()] = flow
        return value

    def take(self, value: str | None) -> Flow | None:
        """The live flow the cookie names, removed (a callback replayed finds nothing)."""
        if not value or not _COOKIE_SHAPE.match(value):
            return None
        flow = self._flows.pop(hashlib.sha256(value.encode()).digest(), None)
        if flow is None or time.monotonic() - flow.started >= FLOW_MAX_AGE:
            return None
        return flow


class OidcLogin:
    """What the handlers share: the login pages, the issuers and the flows under way."""

    def __init__(self, pages: LoginPages, oidc: OidcVerifier):
        self.pages = pages
        self.oidc = oidc
        self.flows = Flows()
        self.flow_cookie = FLOW_COOKIE_TLS if pages.sessions.secure else FLOW_COOKIE_PLAIN

    def client(self, name: str) -> IssuerClient | None:
        """The issuer ``name`` if it offers browser login here."""
        return self.oidc.issuer(name) if name in self.pages.issuers else None


class OidcSession:
    """An IdP's login behind one of our sessions (session.ExternalLogin): its tokens, kept here
    only, renewed with the refresh token past half of the ID token's lifetime."""

    def __init__(self, client: IssuerClient, verified: VerifiedToken, tokens: Mapping[str, Any], nonce: str,
                 source: str, audit: AuditLog | None):
        self.issuer = client.name
        self.subject = str(verified.claims["sub"])
        sid = verified.claims.get("sid")
        self.sid = sid if isinstance(sid, str) else None
        self._client = client
        self._nonce = nonce
        self._source = source
        self._audit = audit
        self._lock = asyncio.Lock()
        self._retry_at = 0.0
        self._refresh_token: str | None = None
        self.principal: Principal = verified.principal
        self._take(verified, tokens)

    def _take(self, verified: VerifiedToken, tokens: Mapping[str, Any]) -> None:
        """The tokens of a login or a renewal: the session's principal and end from now on."""
        self.principal = verified.principal
        self._id_token = str(tokens["id_token"])
        refresh = tokens.get("refresh_token")
        # Without a new refresh token (the IdP does not rotate them) the one we had stays good.
        if isinstance(refresh, str) and refresh:
            self._refresh_token = refresh
        self.expires = float(verified.claims["exp"])
        now = time.time()
        self._renew_after = now + (self.expires - now) / 2

    @property
    def lifetime(self) -> float:
        """Seconds until the ID token expires."""
        return max(0.0, self.expires - time.time())

    @property
    def renewable(self) -> bool:
        """The IdP gave a refresh token."""
        return self._refresh_token is not None

    def renewal_due(self) -> bool:
        return self._refresh_token is not None and time.time() >= max(self._renew_after, self._retry_at)

    async def renew(self) -> Renewed | None:
        async with self._lock:  # concurrent requests: one renewal (a rotated refresh token is used once)
            if not self.renewal_due():
                return Renewed(self.principal, self.expires)
            try:
                verified, tokens = await self._refreshed()
            except TokenRefused as exc:
                if exc.reason is Refusal.ISSUER_UNAVAILABLE and time.time() < self.expires:
                    log.warning("Cannot renew the session of %r at issuer %s (asked again in %.0fs): %s",
                                self.principal.name, self.issuer, RENEWAL_RETRY, exc)
                    self._retry_at = time.time() + RENEWAL_RETRY
                    return Renewed(self.principal, self.expires)
                log.warning("Session of %r ended: issuer %s refused its renewal (%s): %s", self.principal.name,
                            self.issuer, exc.reason, exc)
                self._record("session_renewal", "refused", reason=str(exc.reason))
                return None
            self._take(verified, tokens)
            self._record("session_renewal", "success", expires_in=int(self.lifetime))
            return Renewed(self.principal, self.expires)

    async def _refreshed(self) -> tuple[VerifiedToken, Mapping[str, Any]]:
        assert self._refresh_token is not None  # renewal_due() says so
        tokens = await self._client.token_request({"grant_type": "refresh_token",
                                                   "refresh_token": self._refresh_token})
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            # The session's lifetime is the ID token's: without a new one it cannot be extended.
            raise TokenRefused(Refusal.MALFORMED, "the refresh answer has no ID token")
        verified = await self._client.verify_id_token(id_token, nonce=self._nonce)
        if verified.claims.get("sub") != self.subject:
            raise TokenRefused(Refusal.MALFORMED, "the refreshed ID token is for another subject")
        return verified, tokens

    async def logout_url(self, return_to: str) -> str | None:
        try:
            endpoint = (await self._client.endpoints()).end_session_endpoint
        except TokenRefused as exc:
            log.warning("No logout at issuer %s for %r: %s", self.issuer, self.principal.name, exc)
            return None
        if endpoint is None:
            return None
        query = urlencode({"id_token_hint": self._id_token, "post_logout_redirect_uri": return_to,
                           "client_id": self._client.client_id})
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def _record(self, event: str, outcome: str, **fields: Any) -> None:
        if self._audit is not None:
            self._audit.record(event, principal=self.principal.name, source=self._source, outcome=outcome,
                               issuer=self.issuer, subject=self.subject, **fields)


class _OidcHandler(GuardMixin):
    def initialize(self, login: OidcLogin | None) -> None:
        self._login = login

    def _client_or_404(self, name: str) -> tuple[OidcLogin, IssuerClient] | None:
        client = self._login.client(name) if self._login is not None else None
        if self._login is None or client is None:
            self.send_error(404, reason_text="no browser login with this issuer")
            return None
        return self._login, client

    def _refused(self, login: OidcLogin, name: str, target: str, reason: str, message: str,
                 status: int = 401, **fields: Any) -> None:
        """The login page with ``message``, the refusal audited (``reason``: the class)."""
        log.info("Browser login with issuer %s refused (%s) from %s", name, reason, self.request.remote_ip)
        if self.guard.audit is not None:
            self.guard.audit.record("login", principal=None, source=self.request.remote_ip or "", outcome="refused",
                                    issuer=name, reason=reason, **fields)
        login_page(self, login.pages, target, message, status)


class StartHandler(_OidcHandler):
    """GET /login/oidc/NAME: to the IdP's authorization endpoint, with a new flow."""

    async def get(self, name: str) -> None:
        found = self._client_or_404(name)
        if found is None:
            return
        login, client = found
        target = safe_next(self.get_query_argument("next", None))
        try:
            endpoints = await client.endpoints()
        except TokenRefused as exc:
            log.warning("Browser login with issuer %s: %s", name, exc)
            self._refused(login, name, target, str(exc.reason), _REFUSED[Refusal.ISSUER_UNAVAILABLE].format(name=name),
                          503)
            return
        verifier = secrets.token_urlsafe(48)
        flow = Flow(name, secrets.token_urlsafe(32), secrets.token_urlsafe(32), verifier,
                    f"{self.request.protocol}://{self.request.host}/login/oidc/{name}/callback", target)
        self.set_cookie(login.flow_cookie, login.flows.add(flow), path="/", max_age=FLOW_MAX_AGE, httponly=True,
                        secure=login.pages.sessions.secure, samesite="Lax")
        scopes = client.scopes if "openid" in client.scopes else ("openid", *client.scopes)
        query = urlencode({"response_type": "code", "client_id": client.client_id, "redirect_uri": flow.redirect_uri,
                           "scope": " ".join(scopes), "state": flow.state, "nonce": flow.nonce,
                           "code_challenge": _b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
                           "code_challenge_method": "S256"})
        endpoint = endpoints.authorization_endpoint
        self.redirect(f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", status=303)


class CallbackHandler(_OidcHandler):
    """GET /login/oidc/NAME/callback: the IdP's answer, checked, then our session."""

    def _request_summary(self) -> str:
        # Tornado's access log writes refusals (4xx) with this: without the query, which holds
        # the authorization code.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    async def get(self, name: str) -> None:
        found = self._client_or_404(name)
        if found is None:
            return
        login, client = found
        secure = login.pages.sessions.secure
        flow = login.flows.take(self.get_cookie(login.flow_cookie))
        self.clear_cookie(login.flow_cookie, path="/", httponly=True, secure=secure, samesite="Lax")
        if flow is None or flow.issuer != name or not tokens_match(self.get_query_argument("state", None), flow.state):
            self._refused(login, name, safe_next(None), "bad_state",
                          "The sign-in did not start in this browser or took too long. Please try again.", 400)
            return
        error = self.get_query_argument("error", None)
        if error is not None:
            # The IdP's own error code (access_denied, login_required...), shown as text only.
            code = error if re.fullmatch(r"[a-z_]{1,64}", error) else "invalid"
            self._refused(login, name, flow.target, "idp_error",
                          f"{name} did not sign you in ({code}). Please try again.", error=code)
            return
        try:
            verified, tokens = await self._verified(client, flow)
        except TokenRefused as exc:
            log.info("Browser login with issuer %s: %s", name, exc)
            if self.guard.metrics is not None:
                self.guard.metrics.auth_failed(f"oidc:{name}", Reason.of_refusal(exc.reason))
            message = _REFUSED.get(exc.reason, _FAILED).format(name=name)
            status = 503 if exc.reason is Refusal.ISSUER_UNAVAILABLE else 403 if exc.reason is Refusal.NO_ROLE else 401
            self._refused(login, name, flow.target, str(exc.reason), message, status)
            return
        source = self.request.remote_ip or ""
        external = OidcSession(client, verified, tokens, flow.nonce, source, self.guard.audit)
        sessions = login.pages.sessions
        session_id, session = sessions.start(verified.principal, sessions.session_id(self.request),
                                             lifetime=external.lifetime, external=external)
        lifetime = int(session.ends - session.created)
        self.set_cookie(sessions.cookie_name, session_id, path="/", max_age=int(sessions.store.absolute_timeout),
                        httponly=True, secure=secure, samesite="Strict")
        principal = verified.principal
        log.info("Browser login: user %r (role %s) with issuer %s from %s", principal.name, principal.role, name,
                 source)
        if self.guard.audit is not None:
            self.guard.audit.record("login", principal=principal.name, source=source, outcome="success",
                                    backend=principal.backend, role=str(principal.role), issuer=name,
                                    subject=external.subject, session_lifetime=lifetime,
                                    renewable=external.renewable)
        onward_page(self, flow.target, f"Signed in as {principal.name}")

    async def _verified(self, client: IssuerClient, flow: Flow) -> tuple[VerifiedToken, Mapping[str, Any]]:
        iss = self.get_query_argument("iss", None)
        if iss is not None and iss != (await client.endpoints()).issuer:
            # RFC 9207: the answer comes from another issuer than the one asked (a mix-up attack).
            raise TokenRefused(Refusal.UNKNOWN_ISSUER, "the authorization response's iss is another issuer's")
        code = self.get_query_argument("code", None)
        if not code:
            raise TokenRefused(Refusal.MALFORMED, "the authorization response has no code")
        tokens = await client.token_request({"grant_type": "authorization_code", "code": code,
                                             "redirect_uri": flow.redirect_uri, "code_verifier": flow.verifier})
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise TokenRefused(Refusal.MALFORMED, "the token endpoint answered without an ID token")
        return await client.verify_id_token(id_token, nonce=flow.nonce), tokens


class BackchannelLogoutHandler(_OidcHandler):
    """POST /login/oidc/NAME/backchannel-logout: the IdP ends sessions here (no cookies)."""

    async def post(self, name: str) -> None:
        found = self._client_or_404(name)
        if found is None:
            return
        login, client = found
        source = self.request.remote_ip or ""
        audit = self.guard.audit
        token = self.get_body_argument("logout_token", None)
        try:
            if not token:
                raise TokenRefused(Refusal.MALFORMED, "no logout_token")
            claims = await client.verify_logout_token(token)
        except TokenRefused as exc:
            log.warning("Back-channel logout from issuer %s refused (%s): %s", name, exc.reason, exc)
            if audit is not None:
                audit.record("logout", principal=None, source=source, outcome="refused", issuer=name,
                             via="backchannel", reason=str(exc.reason))
            self.send_error(400, reason_text="invalid logout token")
            return
        sid, sub = claims.get("sid"), claims.get("sub")
        ended = login.pages.sessions.store.end_external(name, sid=sid if isinstance(sid, str) else None,
                                                        subject=sub if isinstance(sub, str) else None)
        log.info("Back-channel logout from issuer %s: %d session(s) ended", name, len(ended))
        if audit is not None:
            # One line per session ended (whose it was), or one saying none was live here.
            principals: list[str | None] = [s.principal.name for s in ended]
            for principal in principals or [None]:
                audit.record("logout", principal=principal, source=source, outcome="success", issuer=name,
                             subject=sub if isinstance(sub, str) else None, via="backchannel", sessions=len(ended))
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish("")


def routes(pages: LoginPages | None, oidc: OidcVerifier | None) -> list[tuple[str, type, dict]]:
    """The IdPs' browser login. Without issuers (or the session scheme) the routes still exist
    (every route is classified in the policy) but answer 404."""
    login = OidcLogin(pages, oidc) if pages is not None and oidc is not None and pages.issuers else None
    return [
        (rf"/login/oidc/({_NAME_SHAPE})", StartHandler, {"login": login}),
        (rf"/login/oidc/({_NAME_SHAPE})/callback", CallbackHandler, {"login": login}),
        (rf"/login/oidc/({_NAME_SHAPE})/backchannel-logout", BackchannelLogoutHandler, {"login": login}),
    ]
