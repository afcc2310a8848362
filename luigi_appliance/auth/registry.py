"""Account backends and credential schemes, chosen by name.

``[auth] backend`` names the account backends, in the order they are asked; the server asks the
credential schemes of ``SCHEMES`` in that order. The backend or scheme named ``N`` is defined in
the module ``luigi_appliance.auth.N``, which registers its factory when imported
(``register_backend`` / ``register_scheme``); this module imports it on first use. So a new
backend (OIDC claims, Kerberos mapping) or scheme (OIDC, Negotiate) is one module plus its
settings section, this module imports none of them (no import cycle), and a scheduler without
LDAP never loads ldap3.

Factories take the settings: a backend's factory the whole ``Settings``, a scheme's a
``SchemeContext`` (the settings and the accounts every scheme that takes a password shares).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from luigi_appliance.auth import AccountBackend, Accounts, Authenticator
from luigi_appliance.auth.outcomes import UNCOUNTED, AuthOutcomes
from luigi_appliance.errors import ApplianceError

if TYPE_CHECKING:
    from luigi_appliance.config import Settings

# Asked in this order for each request: a browser's session cookie first, then a token (it
# names its account explicitly), then a client certificate (no I/O: a connection with one never
# waits for a password check), then a name and password (the costliest check, and the only one
# that can lock a name out).
SCHEMES = ("session", "bearer", "certificate", "basic")

_F = TypeVar("_F")
_S = TypeVar("_S")


@dataclass(frozen=True)
class SchemeContext:
    """What a credential scheme's factory is built from."""

    settings: Settings
    # The [auth] backends behind one throttled, audited, cached password check (auth/basic.py).
    accounts: Accounts
    # Served over TLS: cookies may be Secure (and __Host- prefixed).
    secure: bool
    # Where the schemes report how authentications end (/metrics); nowhere for tools and tests.
    outcomes: AuthOutcomes = UNCOUNTED


BackendFactory = Callable[["Settings"], AccountBackend]
# None: the settings do not enable the scheme (e.g. no client CA), so it is not asked at all.
SchemeFactory = Callable[[SchemeContext], Authenticator | None]

_backends: dict[str, BackendFactory] = {}
_schemes: dict[str, SchemeFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``name`` a value of ``[auth] backend``, built by ``factory`` from the settings."""
    _backends[name] = factory


def register_scheme(name: str, factory: SchemeFactory) -> None:
    """Make ``name`` a credential scheme, built by ``factory`` from a SchemeContext."""
    _schemes[name] = factory


def _lookup(table: dict[str, _F], name: str, kind: str) -> _F:
    if name not in table and name.isidentifier():
        try:
            importlib.import_module(f"{__package__}.{name}")  # registers itself
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise  # the module exists but one of its own imports is missing
    factory = table.get(name)
    if factory is None:
        raise ApplianceError(f"no {kind} named {name!r} (expected a module luigi_appliance.auth.{name} "
                             "that registers it)")
    return factory


def backend_factory(name: str) -> BackendFactory:
    """The factory of the account backend ``name``; ApplianceError when there is none (the
    settings check ``[auth] backend`` with it)."""
    return _lookup(_backends, name, "account backend")


def account_backend(name: str, settings: Settings) -> AccountBackend:
    """The account backend ``name``, built from the settings."""
    return backend_factory(name)(settings)


def account_backends(settings: Settings) -> list[AccountBackend]:
    """The backends of ``[auth] backend``, built from the settings, in the configured order."""
    return [account_backend(name, settings) for name in settings.auth.backends]


def credential_schemes(context: SchemeContext, names: tuple[str, ...] = SCHEMES) -> dict[str, Authenticator]:
    """The credential schemes ``names`` the settings enable, by name, built from ``context``, in
    the order they are asked."""
    built = {name: _lookup(_schemes, name, "credential scheme")(context) for name in names}
    return {name: scheme for name, scheme in built.items() if scheme is not None}


def scheme_of(schemes: Iterable[object], kind: type[_S]) -> _S | None:
    """The scheme of type ``kind`` among ``schemes``; None when it is not configured (its
    routes then answer 404 or are not served)."""
    return next((scheme for scheme in schemes if isinstance(scheme, kind)), None)
