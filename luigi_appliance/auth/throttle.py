"""Failed-login throttling and lockout, per user name and per client address.

After ``limit`` failures within ``window`` a name (or an address) is locked out for ``lockout``:
its logins are refused without asking any backend, so a password-guessing client neither reaches
the directory nor learns anything. Counters live in memory only; a restart forgets them.
A locked-out service account that is already working keeps working: the guard's cache of
verified credentials is consulted before the throttle, so only unknown passwords are refused.

Names are counted under ``names.throttle_key`` (every spelling of a name shares one counter).
The address is None when the client's address is not known (a unix socket without a trusted
proxy, see server/client_address.py): then only the name is counted, since one address for
everybody would let one client's bad guesses lock out all the others.

An administrator can lift a name's lockout on the running scheduler (``clear``, served at
``/appliance/users/unlock``): each failure remembers the name it was for, so the name's failures
are taken off every address too, and an address that only this name's failures locked is freed.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from luigi_appliance.auth.names import throttle_key

MAX_TRACKED = 50_000


@dataclass
class _Record:
    # (time, throttle key of the name tried): an address's record mixes the names tried from it.
    failures: deque[tuple[float, str]] = field(default_factory=deque)
    locked_until: float = 0.0
    # The names whose failures caused the current lockout.
    locked_by: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Cleared:
    """What ``LoginThrottle.clear`` lifted: the name's own lockout and the addresses freed. An
    address also locked by failures of other names stays locked (``still_locked``): lifting it
    would hand whoever tried those names a fresh round of guesses."""

    name_was_locked: bool
    addresses: tuple[str, ...]
    still_locked: tuple[str, ...]


class LoginThrottle:
    def __init__(self, limit: int, window: float, lockout: float):
        self.limit = limit
        self.window = window
        self.lockout = lockout
        self._records: dict[str, _Record] = {}
        # Lockouts started since the process started, a name and an address counted apart (/metrics).
        self.lockouts = 0

    @staticmethod
    def keys(name: str, address: str | None) -> list[str]:
        keys = [f"user:{throttle_key(name)}"]
        if address is not None:
            keys.append(f"addr:{address}")
        return keys

    def locked(self, name: str, address: str | None, now: float | None = None) -> float:
        """Seconds until the name or address may try again; 0 when it may try now."""
        now = time.monotonic() if now is None else now
        waits = [rec.locked_until - now for key in self.keys(name, address)
                 if (rec := self._records.get(key)) is not None and rec.locked_until > now]
        return max(waits, default=0.0)

    def locked_now(self, now: float | None = None) -> int:
        """How many names and addresses are locked out now (at most MAX_TRACKED records to visit)."""
        now = time.monotonic() if now is None else now
        return sum(1 for rec in self._records.values() if rec.locked_until > now)

    def failed(self, name: str, address: str | None, now: float | None = None) -> int:
        """Count a failure; return the most recent failures counted for the name or the
        address, or 0 when this failure locks one of them out."""
        now = time.monotonic() if now is None else now
        if len(self._records) >= MAX_TRACKED:
            self._forget_idle(now)
        locked = False
        recent = 0
        tried = throttle_key(name)
        for key in self.keys(name, address):
            rec = self._records.setdefault(key, _Record())
            while rec.failures and rec.failures[0][0] <= now - self.window:
                rec.failures.popleft()
            rec.failures.append((now, tried))
            if len(rec.failures) >= self.limit:
                rec.locked_until = now + self.lockout
                rec.locked_by = frozenset(n for _, n in rec.failures)
                rec.failures.clear()
                locked = True
                self.lockouts += 1
            recent = max(recent, len(rec.failures))
        return 0 if locked else recent

    def succeeded(self, name: str) -> None:
        """A success clears the name's failures (not the address's: one good account on a
        shared address must not reset a guessing attacker's count there)."""
        self._records.pop(self.keys(name, None)[0], None)

    def clear(self, name: str, now: float | None = None) -> Cleared:
        """Lift ``name``'s lockout and forget its failures, at every address (every spelling of
        the name counts as it: ``ALICE`` clears alice)."""
        now = time.monotonic() if now is None else now
        own = self._records.pop(self.keys(name, None)[0], None)
        tried = throttle_key(name)
        freed: list[str] = []
        kept: list[str] = []
        for key, rec in self._records.items():
            if not key.startswith("addr:"):
                continue
            if any(f[1] == tried for f in rec.failures):
                rec.failures = deque(f for f in rec.failures if f[1] != tried)
            if rec.locked_until > now and tried in rec.locked_by:
                if rec.locked_by == {tried}:
                    rec.locked_until, rec.locked_by = 0.0, frozenset()
                    freed.append(key.removeprefix("addr:"))
                else:
                    kept.append(key.removeprefix("addr:"))
        return Cleared(own is not None and own.locked_until > now, tuple(freed), tuple(kept))

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, r in self._records.items()
                    if r.locked_until <= now and (not r.failures or r.failures[-1][0] <= now - self.window)]:
            del self._records[key]
