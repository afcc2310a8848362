"""A pinned clock and pinned ids for the scheduler's modules, so that a journalled call replays
exactly (ha/replay.py): the leader runs each call under ``pinned(at, uid)`` and records both, the
standby applies it under the same pin.

Pinning swaps the ``time`` attribute of each module in ``TIME_MODULES`` (and the ``uuid`` of
luigi.scheduler, the ``secrets`` of the approval book) for a stand-in whose ``time()`` answers
``at``, whose ``uuid4()`` answers ``uid`` first and then ids derived from it, and which passes
everything else to the real module. The global ``time`` module is never touched: other threads
(the history writer, the journal writer, the lease keeper) keep the real clock. The swap is
process-global for the modules listed, which is fine on the single-threaded IOLoop that runs
every scheduler call. tests/unit/test_clock_pin.py fails when a module that computes scheduler
state from the clock is missing here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

# Every module whose time.time() ends up in the scheduler's state.
TIME_MODULES = (
    "luigi.scheduler",
    "luigi_appliance.luigi_internals.scheduler",
    "luigi_appliance.scheduler.approval_gate",
    "luigi_appliance.scheduler.tasks",
    "luigi_appliance.scheduler.work",
)
# Where ids of the state are drawn: send_scheduler_message's message ids, approval request ids.
UUID_MODULES = ("luigi.scheduler",)
SECRETS_MODULES = ("luigi_appliance.approvals.book",)


@dataclass
class _Ids:
    """The ids one pinned call draws: ``uid`` itself first, then ids derived from it in order.
    Derived by SHA-256 from a random uuid4: as unguessable as the ids they stand in for."""

    uid: str
    drawn: int = 0

    def _next(self, what: str) -> bytes:
        self.drawn += 1
        return hashlib.sha256(f"{self.uid}/{what}/{self.drawn}".encode()).digest()

    def uuid4(self) -> uuid.UUID:
        if self.drawn == 0:
            self.drawn = 1
            return uuid.UUID(self.uid)
        return uuid.UUID(bytes=self._next("uuid")[:16], version=4)

    def token_hex(self, nbytes: int | None = None) -> str:
        return self._next("token").hex()[:2 * (nbytes or 32)]


@dataclass
class _Pins:
    """The pins in force: the outermost's time, the innermost's ids (None: the real ones)."""

    at: list[float] = field(default_factory=list)
    ids: list[_Ids | None] = field(default_factory=list)
    saved: list[tuple[ModuleType, str, Any]] = field(default_factory=list)

    def current_ids(self) -> _Ids | None:
        return next((ids for ids in reversed(self.ids) if ids is not None), None)


_pins = _Pins()


class _StandIn:
    """A module's ``time``, ``uuid`` or ``secrets`` while pinned; the rest is the real module's."""

    def __init__(self, real: ModuleType):
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def time(self) -> float:
        return _pins.at[0]

    def uuid4(self) -> uuid.UUID:
        ids = _pins.current_ids()
        return ids.uuid4() if ids is not None else self._real.uuid4()

    def token_hex(self, nbytes: int | None = None) -> str:
        ids = _pins.current_ids()
        return ids.token_hex(nbytes) if ids is not None else self._real.token_hex(nbytes)


def now() -> float:
    """The pinned time if a pin is in force (a replay, a test driving the clock), else time.time()."""
    return _pins.at[0] if _pins.at else time.time()


def is_pinned() -> bool:
    return bool(_pins.at)


@contextmanager
def pinned(at: float, uid: str | None) -> Iterator[None]:
    """Run the body with the scheduler modules' clock at ``at`` and, with ``uid``, their ids drawn
    from it. Nested: the outer pin's time stays, the innermost ``uid`` draws the ids. Restored on
    exit, also when the body raises. ValueError when ``uid`` is not a uuid."""
    if uid is not None:
        uuid.UUID(uid)  # refuse a bad id before anything is swapped
    outermost = not _pins.at
    if outermost:
        _install()
    _pins.at.append(at)
    _pins.ids.append(_Ids(uid) if uid is not None else None)
    try:
        yield
    finally:
        _pins.at.pop()
        _pins.ids.pop()
        if outermost:
            _restore()


@functools.cache
def _targets() -> tuple[tuple[ModuleType, str, _StandIn], ...]:
    # Imported on first use: the scheduler modules import this one.
    found = []
    for names, attribute in ((TIME_MODULES, "time"), (UUID_MODULES, "uuid"), (SECRETS_MODULES, "secrets")):
        for name in names:
            module = importlib.import_module(name)
            found.append((module, attribute, _StandIn(getattr(module, attribute))))
    return tuple(found)


def _install() -> None:
    for module, attribute, stand_in in _targets():
        _pins.saved.append((module, attribute, getattr(module, attribute)))
        setattr(module, attribute, stand_in)


def _restore() -> None:
    while _pins.saved:
        module, attribute, real = _pins.saved.pop()
        setattr(module, attribute, real)
