"""User names as typed into a login: checked once, keyed once, shown safely.

A name reaches the backends only as typed, never trimmed or folded into another account's name:
``alice\\n`` or `` alice`` is refused, not taken for ``alice`` (a client that sends it has a bug
or is probing). Each backend decides its own case rule (auth/local.py: exact; auth/ldap.py: the
directory compares case-insensitively, so its principals are lower case).

What every backend shares is the throttle key (``throttle_key``): case-folded, with control
characters and surrounding blanks removed, so ``ALICE`` and ``alice\\n`` count against alice's
failures instead of opening counters of their own.

A name that is no valid user name for any backend is often a password typed into the wrong
field. It is never logged or audited as typed: ``NameDisplay`` shows a fixed placeholder and a
short HMAC under a per-process key, so repeated attempts still correlate within one run.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Callable

MAX_NAME_LENGTH = 256
INVALID_NAME = "<invalid user name {digest}>"
_DIGEST_CHARS = 12


def _is_control(ch: str) -> bool:
    # Cc: C0/C1 controls (\n, \r, \0, ...); Cf: invisible formatting (zero-width, bidi overrides).
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def name_problem(name: str) -> str | None:
    """Why ``name`` can be nobody's user name (refused before any backend), or None."""
    if not name:
        return "empty"
    if len(name) > MAX_NAME_LENGTH:
        return "too long"
    if any(_is_control(ch) for ch in name):
        return "control character"
    if name != name.strip():
        return "leading or trailing blank"
    return None


def throttle_key(name: str) -> str:
    """The key failed logins of ``name`` are counted under, shared by every spelling of it."""
    return "".join(ch for ch in name if not _is_control(ch)).strip().casefold()


class NameDisplay:
    """How a login name appears in the log and the audit trail."""

    def __init__(self, valid: Callable[[str], bool]):
        self._valid = valid  # some backend's user-name pattern accepts it
        self._key = secrets.token_bytes(32)

    def shown(self, name: str) -> str:
        if name_problem(name) is None and self._valid(name):
            return name
        digest = hmac.new(self._key, name.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return INVALID_NAME.format(digest=digest[:_DIGEST_CHARS])
