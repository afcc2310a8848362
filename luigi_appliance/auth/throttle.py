"""Failed-login throttling and lockout, per user name and per source address.

After ``limit`` failures within ``window`` a name (or an address) is locked out for ``lockout``:
its logins are refused without asking any backend, so a password-guessing client neither reaches
the directory nor learns anything. Counters live in memory only; a restart forgets them.
A locked-out service account that is already working keeps working: the guard's cache of
verified credentials is consulted before the throttle, so only unknown passwords are refused.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

MAX_TRACKED = 50_000


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(self, limit: int, window: float, lockout: float):
        self.limit = limit
        self.window = window
        self.lockout = lockout
        self._records: dict[str, _Record] = {}

    @staticmethod
    def keys(name: str, remote_ip: str) -> tuple[str, str]:
        return f"user:{name.lower()}", f"addr:{remote_ip}"

    def locked(self, name: str, remote_ip: str, now: float | None = None) -> float:
        """Seconds until the name or address may try again; 0 when it may try now."""
        now = time.monotonic() if now is None else now
        waits = [rec.locked_until - now for key in self.keys(name, remote_ip)
                 if (rec := self._records.get(key)) is not None and rec.locked_until > now]
        return max(waits, default=0.0)

    def failed(self, name: str, remote_ip: str, now: float | None = None) -> int:
        """Count a failure; return the most recent failures counted for the name or the
        address, or 0 when this failure locks one of them out."""
        now = time.monotonic() if now is None else now
        if len(self._records) >= MAX_TRACKED:
            self._forget_idle(now)
        locked = False
        recent = 0
        for key in self.keys(name, remote_ip):
            rec = self._records.setdefault(key, _Record())
            while rec.failures and rec.failures[0] <= now - self.window:
                rec.failures.popleft()
            rec.failures.append(now)
            if len(rec.failures) >= self.limit:
                rec.locked_until = now + self.lockout
                rec.failures.clear()
                locked = True
            recent = max(recent, len(rec.failures))
        return 0 if locked else recent

    def succeeded(self, name: str, remote_ip: str) -> None:
        """A success clears the name's failures (not the address's: one good account on a
        shared address must not reset a guessing attacker's count there)."""
        self._records.pop(self.keys(name, remote_ip)[0], None)

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, r in self._records.items()
                    if r.locked_until <= now and (not r.failures or r.failures[-1] <= now - self.window)]:
            del self._records[key]
