"""The ``session`` credential scheme: a cookie instead of HTTP Basic for people using the visualiser.

A browser that gets a Basic challenge shows its own password dialog, keeps resending the password
with every request (also with requests other sites make it send) and cannot log out. So people
log in once through ``/login`` (``luigi_appliance.server.login``) and get a session cookie;
programs (Luigi workers, curl) keep using Basic or bearer tokens.

Sessions live in this process's memory only: a restart logs everybody out. The server keeps only
the SHA-256 of each session id, so a dump of the table cannot be replayed as cookies. Each
session has an idle timeout (reset by every request made with it) and an absolute timeout
(counted from the login, never extended).

A session may also come from an identity provider's login (server/oidc_login.py): its
``ExternalLogin`` bounds the session's life (the ID token's expiry), renews it before that (the
refresh token, kept on the server like every other token of the IdP: the cookie holds only the
session id) and knows the IdP's own logout.

State-changing requests made with a session must carry the session's CSRF token (a synchronizer
token, different from the session id) in the ``X-CSRF-Token`` header, in addition to the guard's
Origin check: the visualiser's POST shim reads it from the page and sends it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tornado.httputil import HTTPServerRequest

from luigi_appliance.auth import CsrfRefused, Principal
from luigi_appliance.auth.outcomes import SESSION, UNCOUNTED, AuthOutcomes, Reason
from luigi_appliance.auth.registry import SchemeContext, register_scheme

COOKIE_TLS = "__Host-luigi-session"  # __Host-: only set by this host, Secure, Path=/, no Domain
COOKIE_PLAIN = "luigi-session"  # the prefix needs Secure, impossible over plain HTTP
CSRF_HEADER = "X-CSRF-Token"
MAX_SESSIONS = 10_000
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
_ID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class PasswordChecker(Protocol):
    """What the login form needs from the password backends (BasicAuthenticator.check)."""

    async def check(self, name: str, password: str, remote_ip: str) -> Principal | None: ...


@dataclass(frozen=True)
class Renewed:
    """What a renewed external login gives: the principal now, and when it ends (``time.time()``)."""

    principal: Principal
    expires: float


class ExternalLogin(Protocol):
    """A login an identity provider made for a session (server/oidc_login.py)."""

    issuer: str  # the NAME of [oidc.NAME]
    subject: str
    sid: str | None  # the IdP's session id, when it gave one (back-channel logout names it)

    def renewal_due(self) -> bool:
        """Time to renew (before the session would end), and the login can be renewed."""

    async def renew(self) -> Renewed | None:
        """Renewed at the IdP, or None: the IdP refused, the session must end."""

    async def logout_url(self, return_to: str) -> str | None:
        """Where the browser ends its session at the IdP (RP-initiated logout), coming back to
        ``return_to``; None when the IdP publishes no end_session_endpoint."""


@dataclass
class Session:
    principal: Principal
    csrf_token: str
    created: float
    last_seen: float
    # On the store's clock: when the session ends however busy it is (the absolute timeout, or
    # sooner the external login's expiry).
    ends: float = math.inf
    external: ExternalLogin | None = field(default=None, repr=False)


def _digest(session_id: str) -> bytes:
    # Unkeyed is enough: ids are 256 random bits, so the hash cannot be inverted by guessing.
    return hashlib.sha256(session_id.encode("ascii")).digest()


class SessionStore:
    """Session ids (hashed) -> sessions, with idle and absolute expiry."""

    def __init__(self, idle_timeout: float, absolute_timeout: float,
                 clock: Callable[[], float] = time.monotonic):
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self._clock = clock
        self._sessions: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def now(self) -> float:
        """The store's clock, the one ``Session.created`` is on."""
        return self._clock()

    def create(self, principal: Principal, *, lifetime: float | None = None,
               external: ExternalLogin | None = None) -> tuple[str, Session]:
        """A new session with a new random id (never one the client chose or had before), ending
        after ``absolute_timeout`` or ``lifetime`` if that is sooner."""
        now = self._clock()
        if len(self._sessions) >= MAX_SESSIONS:
            self._purge(now)
        if len(self._sessions) >= MAX_SESSIONS:
            # A login flood must not grow memory without bound: the least recently used goes.
            del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].last_seen)]
        session_id = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), now, now, external=external)
        session.ends = self.ends(session, lifetime)
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def ends(self, session: Session, lifetime: float | None) -> float:
        """When ``session`` ends if its login is good for ``lifetime`` more seconds (None: as long
        as the absolute timeout allows): never later than the absolute timeout from its login."""
        limit = session.created + self.absolute_timeout
        return limit if lifetime is None else min(limit, self._clock() + lifetime)

    def end_external(self, issuer: str, *, sid: str | None, subject: str | None) -> list[Session]:
        """End the sessions of ``issuer``'s logins with that IdP session id, or with that subject
        when no sid is given (OIDC back-channel logout: sid, sub, or both); the sessions ended."""
        if sid is None and subject is None:
            return []
        ended = [key for key, s in self._sessions.items()
                 if s.external is not None and s.external.issuer == issuer
                 and (sid is None or s.external.sid == sid) and (subject is None or s.external.subject == subject)]
        return [self._sessions.pop(key) for key in ended]

    def get(self, session_id: str) -> Session | None:
        """The live session for an id (and mark it used), or None if unknown or expired."""
        if not _ID_SHAPE.match(session_id):
            return None
        key = _digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._sessions[key]
            return None
        session.last_seen = now
        return session

    def destroy(self, session_id: str) -> Session | None:
        if not _ID_SHAPE.match(session_id):
            return None
        return self._sessions.pop(_digest(session_id), None)

    def clear(self) -> None:
        self._sessions.clear()

    def _expired(self, session: Session, now: float) -> bool:
        return (now - session.last_seen >= self.idle_timeout
                or now - session.created >= self.absolute_timeout or now >= session.ends)

    def _purge(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so the token cannot be guessed byte by byte from timings."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("ascii"))


class SessionAuthenticator:
    """Authenticator for the session cookie; also holds what the login and logout pages need."""

    def __init__(self, idle_timeout: float, absolute_timeout: float, passwords: PasswordChecker, *, secure: bool,
                 outcomes: AuthOutcomes = UNCOUNTED, password_login: bool = True):
        self.store = SessionStore(idle_timeout, absolute_timeout)
        self._outcomes = outcomes
        self.passwords = passwords
        self.secure = secure
        # [session] password_login: the login form's name and password (else only an IdP's login).
        self.password_login = password_login
        self.cookie_name = COOKIE_TLS if secure else COOKIE_PLAIN

    def session_id(self, request: HTTPServerRequest) -> str | None:
        morsel = request.cookies.get(self.cookie_name)
        return morsel.value if morsel is not None and morsel.value else None

    def lookup(self, request: HTTPServerRequest) -> tuple[str, Session] | None:
        session_id = self.session_id(request)
        if session_id is None:
            return None
        session = self.store.get(session_id)
        return None if session is None else (session_id, session)

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        session_id = self.session_id(request)
        if session_id is None:
            return None
        session = self.store.get(session_id)
        if session is None:
            self._outcomes.auth_failed(SESSION, Reason.INVALID_SESSION)
            return None
        if session.external is not None and session.external.renewal_due():
            renewed = await session.external.renew()
            if renewed is None:
                # The IdP refused the renewal (logged and audited there): the session ends now.
                self.store.destroy(session_id)
                self._outcomes.auth_failed(SESSION, Reason.INVALID_SESSION)
                return None
            session.principal = renewed.principal
            session.ends = self.store.ends(session, renewed.expires - time.time())
        if request.method not in _SAFE_METHODS and not tokens_match(request.headers.get(CSRF_HEADER),
                                                                    session.csrf_token):
            # A live session cookie on a state-changing request without the page's token: a
            # forged request. Refused outright rather than passed on to the next authenticator.
            self._outcomes.auth_failed(SESSION, Reason.CSRF)
            raise CsrfRefused("CSRF token missing or wrong")
        self._outcomes.auth_succeeded(SESSION)
        return session.principal

    def start(self, principal: Principal, previous_id: str | None, *, lifetime: float | None = None,
              external: ExternalLogin | None = None) -> tuple[str, Session]:
        """Log in: end whatever session the browser had and issue a fresh id (no fixation).
        ``lifetime`` and ``external``: an IdP's login, good for that many seconds at most."""
        # The login form's password check (or the IdP's login), counted by the backend that
        # verified it.
        self._outcomes.auth_succeeded(principal.backend)
        if previous_id is not None:
            self.store.destroy(previous_id)
        return self.store.create(principal, lifetime=lifetime, external=external)

    def reload(self) -> None:
        """End every session: a deleted account or a changed role must not live on in a cookie."""
        self.store.clear()


def session_scheme(context: SchemeContext) -> SessionAuthenticator:
    """Browser sessions from /login (in memory only); their passwords go through the accounts'
    shared check."""
    session = context.settings.session
    return SessionAuthenticator(session.idle_timeout, session.absolute_timeout, context.accounts,
                                secure=context.secure, outcomes=context.outcomes,
                                password_login=session.password_login)


register_scheme("session", session_scheme)
