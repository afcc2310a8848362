"""Authentication and authorization: who is calling, and what they may do.

The server asks its ``Authenticator``s, in order, for the ``Principal`` behind a request; each
scheme (browser session cookie, bearer token, HTTP Basic against local users or LDAP) plugs in
behind that interface. What a principal may do is decided by its ``Role`` against the tables in
``luigi_appliance.policy``, and, for ``add_task``, by its task-family allowlist.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from tornado.httputil import HTTPServerRequest

from luigi_appliance.errors import ApplianceError


class Role(enum.IntEnum):
    """Ordered roles: each may do everything the ones below it may."""

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


class AuthUnavailable(ApplianceError):
    """The backend cannot decide right now (e.g. its directory is down): answer 503, not 401."""


class LockedOut(ApplianceError):
    """Too many failed logins for this name or address: answer 429 without checking anything."""

    def __init__(self, retry_after: float):
        super().__init__(f"locked out for {retry_after:.0f}s after repeated failed logins")
        self.retry_after = retry_after


class Authenticator(Protocol):
    """Resolves a request's credentials to a principal.

    None means "no credentials of my scheme here (or they are wrong)": the guard asks the next
    authenticator, and answers 401 when none succeeds. Raise AuthUnavailable for 503.
    """

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None: ...

    def reload(self) -> None:
        """Re-read whatever backs this authenticator (called on SIGHUP)."""
