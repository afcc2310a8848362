"""Authentication and authorization: who is calling, and what they may do.

Two seams, each filled by name from ``luigi_appliance.auth.registry``:

- credential schemes (``Authenticator``: browser session cookie, bearer token, HTTP Basic) read
  a request's credentials; the server asks them, in order, for the ``Principal`` behind it;
- account backends (``AccountBackend``: the local users file, LDAP) know the accounts and check
  their passwords, asked in the order of ``[auth] backend``.

A scheme answers a principal or None; anything else is an ``AuthError``, which only the guard
(server/guard.py) turns into an HTTP answer. What a principal may do is decided by its ``Role``
against the tables in ``luigi_appliance.policy``, and, for ``add_task``, by its task-family
allowlist.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from tornado.httputil import HTTPServerRequest

from luigi_appliance.errors import ApplianceError


class Role(enum.IntEnum):
    """Ordered roles: each may do everything the ones below it may."""

    # A scrape account: /metrics and /healthz, nothing else (no task names, no pages).
    METRICS = 0
    VIEWER = 1
    WORKER = 2
    OPERATOR = 3
    ADMIN = 4

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(r.name.lower() for r in cls)
            raise ValueError(f"expected a role ({names}), got {text!r}") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``groups``: directory (or local) group names it belongs to. ``families``: glob patterns of
    the task families it may add; None means unrestricted.
    """

    name: str
    role: Role
    backend: str
    groups: frozenset[str] = frozenset()
    families: tuple[str, ...] | None = None


class AuthError(ApplianceError):
    """Authentication neither succeeded nor found no credentials: the guard answers for it."""


class AuthUnavailable(AuthError):
    """The backend cannot decide right now (e.g. its directory is down): answer 503, not 401."""


class CsrfRefused(AuthError):
    """A live browser session on a state-changing request without its CSRF token: a forged
    request, refused outright (403) rather than passed on to the next scheme."""


class LockedOut(AuthError):
    """Too many failed logins for this name or address: answer 429 without checking anything."""

    def __init__(self, retry_after: float):
        super().__init__(f"locked out for {retry_after:.0f}s after repeated failed logins")
        self.retry_after = retry_after


class Authenticator(Protocol):
    """A credential scheme: resolves a request's credentials to a principal.

    None means "no credentials of my scheme here (or they are wrong)": the guard asks the next
    authenticator, and answers 401 when none succeeds. Raise an AuthError for anything else
    (AuthUnavailable: 503, LockedOut: 429, CsrfRefused: 403).
    """

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None: ...

    def reload(self) -> None:
        """Re-read whatever backs this authenticator (called on SIGHUP)."""


class AccountBackend(Protocol):
    """Where accounts live (users file, directory): names, passwords, roles. Methods may block:
    callers run them in the backend's own threads (auth/basic.py)."""

    backend: str

    def verify(self, name: str, password: str) -> Principal | None:
        """The principal for a name and password; None if wrong or unknown."""

    def principal(self, name: str) -> Principal | None:
        """The account's principal now, without a password; None if it has none."""

    def knows(self, name: str) -> bool:
        """True when the name is one of this backend's accounts, known without any I/O."""

    def check_username(self, name: str) -> bool:
        """Whether ``name`` has the shape of a user name of this backend."""

    def reload(self) -> None: ...


class Accounts(Authenticator, Protocol):
    """Every configured backend behind one password check (BasicAuthenticator): what the
    schemes that take a password (session login, token exchange) or re-check an account
    (bearer tokens) share."""

    # Bumped by reload(): answers of ``current`` hold until the next one.
    generation: int

    async def check(self, name: str, password: str, remote_ip: str) -> Principal | None:
        """The principal for a name and password; raises LockedOut or AuthUnavailable."""

    async def current(self, backend: str, name: str) -> Principal | None:
        """The principal account ``name`` of ``backend`` has now; raises AuthUnavailable."""
