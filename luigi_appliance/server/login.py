"""``/login`` and ``/logout``: the browser's way in and out (sessions: ``auth/session.py``).

The login form is itself protected against login CSRF (a page elsewhere logging the victim in as
the attacker): the guard refuses cross-origin POSTs, the cookie is SameSite=Strict, and the form
carries a token that is an HMAC of a random cookie set with the form, so only a browser that
fetched the form from this server can post it. A wrong name and a wrong password get the same
answer, and the password is only ever handed to ``PasswordChecker.check``.

Beside the form the page offers one "Sign in with NAME" link per ``[oidc.NAME]`` issuer with
``browser_login`` (server/oidc_login.py); ``[session] password_login = false`` leaves only those
(the form is gone and its POST refused). Logging out of such a session also ends it at the IdP
when the IdP publishes an end_session_endpoint (RP-initiated logout).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import math
import secrets
from urllib.parse import urlencode, urlsplit

import tornado.web

from luigi_appliance.auth import AuthUnavailable, LockedOut
from luigi_appliance.auth.oidc import OidcVerifier
from luigi_appliance.auth.session import Session, SessionAuthenticator, tokens_match
from luigi_appliance.server.guard import GuardMixin
from luigi_appliance.server.page_header import PRODUCT, STYLE, page_header

log = logging.getLogger(__name__)

DEFAULT_NEXT = "/"
LOGIN_COOKIE_TLS = "__Host-luigi-login"
LOGIN_COOKIE_PLAIN = "luigi-login"
LOGIN_FORM_MAX_AGE = 3600
_MAX_NEXT = 2048

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in - {product}</title>
<style>
body {{ font-family: sans-serif; background: #ecf0f5; margin: 0; }}
header {{ background: #00a65a; }}
{header_style}
main {{ max-width: 22em; margin: 10vh auto; background: #fff; padding: 1.5em 2em; border-radius: 4px; }}
h1 {{ font-size: 1.3em; }}
label {{ display: block; margin-top: 1em; }}
input[type=text], input[type=password] {{ width: 100%; box-sizing: border-box; padding: .4em; }}
button {{ margin-top: 1.5em; padding: .5em 1.5em; }}
.error {{ color: #a94442; background: #f2dede; padding: .5em; }}
.sso {{ display: block; margin-top: 1em; padding: .6em 1em; text-align: center; background: #3c8dbc;
  color: #fff; text-decoration: none; border-radius: 3px; }}
</style>
</head>
<body>
<header>{header}</header>
<main>
<h1>Log in to the Luigi scheduler</h1>
{message}
{sso}
{form}
</main>
</body>
</html>
"""

_FORM = """<form id="password-login" method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<input type="hidden" name="login_token" value="{token}">
<label for="username">User name</label>
<input type="text" id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form>"""

# A page that sends the browser on with a navigation of its own instead of a redirect: after the
# IdP's cross-site redirect a SameSite=Strict session cookie is not sent along a redirect chain,
# and after the logout form's POST a redirect to the IdP would break the CSP's form-action.
_ONWARD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="0; url={url}">
<title>{title} - {product}</title>
</head>
<body>
<p>{title}. <a id="onward" href="{url}">Continue</a></p>
</body>
</html>
"""


def lockout_left(seconds: float) -> str:
    """How long a lockout still lasts, as a person reads it: "40 seconds", "15 minutes"."""
    whole = max(1, math.ceil(seconds))
    if whole < 120:
        return f"{whole} second{'s' if whole != 1 else ''}"
    minutes = math.ceil(whole / 60)
    return f"{minutes} minutes"


def safe_next(value: str | None) -> str:
    """``value`` if it is a path on this server, else the default (no open redirect).

    Refused: anything with a scheme or host (``https://evil``, ``//evil``), backslashes (browsers
    read ``/\\evil`` as ``//evil``), control characters, and anything not starting with ``/``.
    """
    if not value or len(value) > _MAX_NEXT or not value.startswith("/") or value.startswith("//"):
        return DEFAULT_NEXT
    if "\\" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return DEFAULT_NEXT
    return value


class LoginPages:
    """What /login, /logout and the IdPs' logins share: the sessions, the key of the login-form
    tokens and the issuers offered for browser login."""

    def __init__(self, sessions: SessionAuthenticator, issuers: tuple[str, ...] = ()):
        self.sessions = sessions
        self.issuers = issuers
        self.form_cookie = LOGIN_COOKIE_TLS if sessions.secure else LOGIN_COOKIE_PLAIN
        self._form_key = secrets.token_bytes(32)  # per process: a restart expires open forms

    def form_token(self, cookie_value: str) -> str:
        return hmac.new(self._form_key, cookie_value.encode(), hashlib.sha256).hexdigest()


def login_page(handler: tornado.web.RequestHandler, pages: LoginPages, target: str, message: str = "",
               status: int = 200) -> None:
    """The login page (the issuers' links, the form with a fresh form cookie and the token that
    matches it unless password login is off), with ``message`` as an alert."""
    secure = pages.sessions.secure
    form = ""
    if pages.sessions.password_login:
        cookie = secrets.token_urlsafe(32)
        handler.set_cookie(pages.form_cookie, cookie, path="/", max_age=LOGIN_FORM_MAX_AGE, httponly=True,
                           secure=secure, samesite="Strict")
        form = _FORM.format(next=html.escape(target, quote=True), token=pages.form_token(cookie))
    query = urlencode({"next": target}) if target != DEFAULT_NEXT else ""
    sso = "".join(f'<a class="sso" id="sso-{html.escape(name, quote=True)}" '
                  f'href="/login/oidc/{html.escape(name, quote=True)}{"?" + html.escape(query) if query else ""}">'
                  f"Sign in with {html.escape(name)}</a>" for name in pages.issuers)
    handler.set_status(status)
    handler.set_header("Content-Type", "text/html; charset=UTF-8")
    notice = f'<p class="error" id="login-error" role="alert">{html.escape(message)}</p>' if message else ""
    handler.finish(_PAGE.format(message=notice, sso=sso, form=form, product=PRODUCT, header_style=STYLE,
                                header=page_header(handler).html(None, product_link="/login")))


def onward_page(handler: tornado.web.RequestHandler, url: str, title: str) -> None:
    """A 200 page whose only content sends the browser to ``url`` (see ``_ONWARD``)."""
    handler.set_header("Content-Type", "text/html; charset=UTF-8")
    handler.finish(_ONWARD.format(url=html.escape(url, quote=True), title=html.escape(title), product=PRODUCT))


class LoginHandler(GuardMixin):
    def initialize(self, pages: LoginPages | None) -> None:
        self._pages = pages

    def prepare(self):
        return self._prepare_enabled()

    async def _prepare_enabled(self) -> None:
        await GuardMixin.prepare(self)
        if not self._finished and self._pages is None:
            self.send_error(404, reason_text="browser login is not enabled")

    @property
    def pages(self) -> LoginPages:
        assert self._pages is not None  # checked in prepare()
        return self._pages

    def get(self) -> None:
        self._form(safe_next(self.get_query_argument("next", None)))

    head = get

    async def post(self) -> None:
        target = safe_next(self.get_body_argument("next", None))
        if not self.pages.sessions.password_login:
            self._form(target, "Logging in with a user name and password is switched off here.", 403)
            return
        if not self._form_token_ok():
            self._form(target, "The login form expired. Please try again.", 403)
            return
        name = self.get_body_argument("username", "")
        password = self.get_body_argument("password", "")
        remote_ip = self.request.remote_ip or ""
        try:
            principal = await self.pages.sessions.passwords.check(name, password, remote_ip) if name else None
        except AuthUnavailable:
            self._form(target, "The authentication service is unavailable. Please try again later.", 503)
            return
        except LockedOut as exc:
            # Same page for a locked name and a locked address: it tells nothing about accounts.
            self.set_header("Retry-After", str(int(exc.retry_after) + 1))
            self._form(target, f"Too many failed logins. Try again in {lockout_left(exc.retry_after)}.", 429)
            return
        if principal is None:
            # Same words and status for an unknown user and a wrong password.
            log.info("Browser login refused from %s", remote_ip)
            self._form(target, "Wrong user name or password.", 401)
            return
        sessions = self.pages.sessions
        session_id, _ = sessions.start(principal, sessions.session_id(self.request))
        self.set_cookie(sessions.cookie_name, session_id, path="/", max_age=int(sessions.store.absolute_timeout),
                        httponly=True, secure=sessions.secure, samesite="Strict")
        self.clear_cookie(self.pages.form_cookie, path="/", httponly=True, secure=sessions.secure, samesite="Strict")
        log.info("Browser login: user %r (role %s) from %s", principal.name, principal.role, remote_ip)
        self.redirect(target, status=303)

    def _form_token_ok(self) -> bool:
        cookie = self.get_cookie(self.pages.form_cookie)
        if not cookie:
            return False
        return tokens_match(self.get_body_argument("login_token", None), self.pages.form_token(cookie))

    def _form(self, target: str, message: str = "", status: int = 200) -> None:
        login_page(self, self.pages, target, message, status)


class LogoutHandler(GuardMixin):
    """POST /logout: ends the session server-side and clears the cookie, then back to the form,
    by way of the IdP's end_session_endpoint for a session an IdP's login made."""

    def initialize(self, pages: LoginPages | None) -> None:
        self._pages = pages

    async def post(self) -> None:
        if self._pages is None:
            self.send_error(404, reason_text="browser login is not enabled")
            return
        sessions = self._pages.sessions
        found = sessions.lookup(self.request)
        end_at_idp = None
        if found is not None:
            session_id, session = found
            token = self.get_body_argument("csrf_token", None) or self.request.headers.get("X-CSRF-Token")
            if not tokens_match(token, session.csrf_token):
                self.send_error(403, reason_text="CSRF token missing or wrong")
                return
            sessions.store.destroy(session_id)
            end_at_idp = await self._idp_logout(session)
            log.info("Browser logout: user %r%s", session.principal.name,
                     " (also at the identity provider)" if end_at_idp else "")
        self.clear_cookie(sessions.cookie_name, path="/", httponly=True, secure=sessions.secure, samesite="Strict")
        if end_at_idp is not None:
            onward_page(self, end_at_idp, "Signing out at the identity provider")
            return
        self.redirect("/login", status=303)

    async def _idp_logout(self, session: Session) -> str | None:
        """The IdP's logout URL for an IdP's session (None for a password login, or an IdP
        without end_session_endpoint); the logout audited either way."""
        external = session.external
        url = None
        if external is not None:
            url = await external.logout_url(f"{self.request.protocol}://{self.request.host}/login")
        if self.guard.audit is not None:
            fields = {} if external is None else {"issuer": external.issuer, "subject": external.subject,
                                                  "via": "rp_initiated" if url else "local"}
            self.guard.audit.record("logout", principal=session.principal.name, source=self.request.remote_ip or "",
                                    outcome="success", **fields)
        return url


def pages_for(sessions: SessionAuthenticator | None, oidc: OidcVerifier | None) -> LoginPages | None:
    """What the login pages share; None without the session scheme."""
    if sessions is None:
        return None
    issuers = () if oidc is None else tuple(n for n in oidc.names() if oidc.issuer(n).browser_login)
    return LoginPages(sessions, issuers)


def routes(pages: LoginPages | None) -> list[tuple[str, type, dict]]:
    """What the session scheme brings: the login and logout pages. Without the scheme they
    still exist (every route is classified in the policy) but answer 404."""
    return [
        (r"/login", LoginHandler, {"pages": pages}),
        (r"/logout", LogoutHandler, {"pages": pages}),
    ]
