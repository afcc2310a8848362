"""How authentications end, for /metrics: the bounded reason classes, declared once.

The credential schemes and the shared password check report here what became of each attempt;
metrics/registry.py counts it (luigi_appliance_auth_successes_total, ..._failures_total). Labels
stay bounded: a backend is an [auth] backend name or a scheme name, a reason one of ``Reason``;
never a user name, an address or a token.
"""

from __future__ import annotations

import enum
from typing import Protocol

# The scheme names that label an outcome no single account backend decided.
BASIC = "basic"  # the shared password check: every backend asked, or none (locked out)
BEARER = "bearer"
SESSION = "session"


class Reason(enum.StrEnum):
    """Why an authentication failed."""

    # Unknown name or wrong password (every backend asked said no), or a malformed name.
    BAD_CREDENTIALS = "bad_credentials"
    # The name or the address is locked out: no backend was asked.
    LOCKED_OUT = "locked_out"
    # A backend that might know the name could not answer (directory down).
    UNAVAILABLE = "unavailable"
    # A bearer token that is malformed, signed by no known key, or expired.
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - a label, not a secret
    # A valid bearer token whose account no longer exists or has no role.
    ACCOUNT_GONE = "account_gone"
    # A session cookie naming no live session (unknown, ended or timed out).
    INVALID_SESSION = "invalid_session"
    # A live session on a state-changing request without its CSRF token.
    CSRF = "csrf"
    # An OpenID Connect token refused (auth/oidc: the classes of Refusal, same values; the
    # backend label is then oidc:NAME, or the scheme when no issuer was chosen).
    OIDC_MALFORMED = "malformed"
    OIDC_UNKNOWN_ISSUER = "unknown_issuer"
    OIDC_BAD_ALGORITHM = "bad_algorithm"
    OIDC_UNKNOWN_KEY = "unknown_key"
    OIDC_BAD_SIGNATURE = "bad_signature"
    OIDC_WRONG_AUDIENCE = "wrong_audience"
    OIDC_EXPIRED = "expired"
    OIDC_NOT_YET_VALID = "not_yet_valid"
    OIDC_BAD_NONCE = "bad_nonce"
    OIDC_NO_ROLE = "no_role"
    OIDC_ISSUER_UNAVAILABLE = "issuer_unavailable"

    @classmethod
    def of_refusal(cls, refusal: str) -> Reason:
        """The reason counted for an OIDC ``Refusal`` (a StrEnum of the same values)."""
        return cls(str(refusal))


class AuthOutcomes(Protocol):
    """Where the schemes report outcomes (metrics.registry.SchedulerMetrics)."""

    def auth_succeeded(self, backend: str) -> None: ...

    def auth_failed(self, backend: str, reason: Reason) -> None: ...


class Uncounted:
    """Outcomes nobody counts: the default of a scheme built without metrics (tests, tools)."""

    def auth_succeeded(self, backend: str) -> None:
        pass

    def auth_failed(self, backend: str, reason: Reason) -> None:
        pass


UNCOUNTED = Uncounted()
