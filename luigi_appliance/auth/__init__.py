"""Authentication and authorization: who is calling, and what they may do.

The server asks one ``Authenticator`` for the ``Principal`` behind a request; backends (local
users file now, LDAP and bearer tokens later) plug in behind that interface. What a principal may
do is decided by its ``Role`` against the tables in ``luigi_appliance.policy``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

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
    """An authenticated caller."""

    name: str
    role: Role
    backend: str


class AuthUnavailable(ApplianceError):
    """The backend cannot decide right now (e.g. its directory is down): answer 503, not 401."""


class Authenticator(Protocol):
    """Resolves request credentials to a principal; None means "not authenticated"."""

    async def authenticate(self, authorization: str | None) -> Principal | None: ...

    def reload(self) -> None:
        """Re-read whatever backs this authenticator (called on SIGHUP)."""
